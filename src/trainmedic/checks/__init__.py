"""trainmedic.checks."""
