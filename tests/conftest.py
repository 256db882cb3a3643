"""Suite-wide settings: one torch thread per test worker (CI runs `pytest -n 2` on 2 cores), no hub access."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("KERAS_BACKEND", "torch")

import torch  # noqa: E402

torch.set_num_threads(1)
