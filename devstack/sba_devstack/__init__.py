"""sba_devstack."""
