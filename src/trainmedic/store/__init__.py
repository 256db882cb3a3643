"""trainmedic.store."""
