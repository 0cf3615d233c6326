"""sba_api."""
