"""trainmedic.integrations."""
