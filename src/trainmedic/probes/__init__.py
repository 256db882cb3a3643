"""trainmedic.probes."""
