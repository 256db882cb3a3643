"""trainmedic.remedies: model, data and optimizer remedies as plain functions (exposed as ``tm.remedies``).

One small module per family; each function changes the model/optimizer in place (or builds a new object) and
returns what it changed, so the caller can log it. The remedy codes they implement are in
:data:`trainmedic.codes.REMEDIES`.
"""

from __future__ import annotations

from ._modules import RemedyWarning
from .activations import count_activations, swap_activations
from .augmentation import (
    Compose,
    Cutout,
    FeatureDropout,
    FeatureNoise,
    GaussianNoise,
    Mixup,
    MixupBatch,
    RandomCrop,
    RandomHorizontalFlip,
    make_augmentation,
    mixup,
)
from .checkpoint import EarlyStopping, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .clipping import GradientClipper, clip_norm_from_history, healthy_stretch, install_gradient_clipping
from .init import InitChoice, expected_init_std, following_activations, reinit
from .normalization import insert_normalization
from .optim import (
    LRChange,
    MomentumChange,
    WarmupThenPlateau,
    add_missing_params,
    add_momentum,
    scale_learning_rate,
    set_learning_rate,
    switch_optimizer,
    warmup_then_plateau,
)
from .plateau import Plateau, improved
from .regularization import (
    WeightDecayReport,
    add_dropout,
    set_dropout,
    set_weight_decay,
    weight_decay_param_groups,
)
from .sampling import UndersamplingSampler, balanced_sampler, class_counts, class_weights
from .transfer import (
    GradualUnfreezer,
    TransferReport,
    freeze,
    gradual_unfreeze,
    load_matching_weights,
    unfreeze,
)

__all__ = [
    "Compose",
    "Cutout",
    "EarlyStopping",
    "FeatureDropout",
    "FeatureNoise",
    "GaussianNoise",
    "GradientClipper",
    "GradualUnfreezer",
    "InitChoice",
    "LRChange",
    "Mixup",
    "MixupBatch",
    "MomentumChange",
    "Plateau",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RemedyWarning",
    "TransferReport",
    "UndersamplingSampler",
    "WarmupThenPlateau",
    "WeightDecayReport",
    "add_dropout",
    "add_missing_params",
    "add_momentum",
    "balanced_sampler",
    "class_counts",
    "class_weights",
    "clip_norm_from_history",
    "count_activations",
    "expected_init_std",
    "following_activations",
    "freeze",
    "gradual_unfreeze",
    "healthy_stretch",
    "improved",
    "insert_normalization",
    "install_gradient_clipping",
    "load_checkpoint",
    "load_matching_weights",
    "make_augmentation",
    "mixup",
    "reinit",
    "rng_state",
    "save_checkpoint",
    "scale_learning_rate",
    "set_dropout",
    "set_learning_rate",
    "set_rng_state",
    "set_weight_decay",
    "swap_activations",
    "switch_optimizer",
    "unfreeze",
    "warmup_then_plateau",
    "weight_decay_param_groups",
]
