"""trainmedic.metrics."""
