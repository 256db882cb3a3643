"""trainmedic.remedies."""
