"""sba_store."""
