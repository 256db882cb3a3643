"""Probes: what is measured during training. They only measure; the recorder stores."""
