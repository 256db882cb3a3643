"""trainmedic.report."""
