"""sba_cli."""
