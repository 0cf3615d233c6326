"""sba_operator."""
