"""sba_tools."""
