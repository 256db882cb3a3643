"""Which quantiles of each layer's weights and gradients a capture records, and their signal names.

Kept apart from the probe (no torch import) so the report can name the signals without loading torch.
"""

from __future__ import annotations

# quantiles of each layer's weights and gradients at a capture (the report's distribution view), taken on a
# fixed, seeded sample of QUANTILE_SAMPLE elements per layer (nearest rank on the sorted sample)
QUANTILES = (0.01, 0.25, 0.5, 0.75, 0.99)
QUANTILE_SAMPLE = 512


def quantile_names(kind: str) -> list[str]:
    """The layer statistics of one kind (``weight`` or ``grad``): ``weight_q01`` … ``weight_q99``."""
    return [f"{kind}_q{round(q * 100):02d}" for q in QUANTILES]


QUANTILE_STATS = tuple(quantile_names("weight") + quantile_names("grad"))
