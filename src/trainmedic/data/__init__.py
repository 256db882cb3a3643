"""trainmedic.data."""
