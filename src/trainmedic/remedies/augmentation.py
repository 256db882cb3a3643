"""Batch augmentations in plain torch ops (remedy ``data_augmentation``).

Each augmentation is a callable ``(x, y) -> (x, y)`` on a whole batch, so they compose (:class:`Compose`) and
run on the batch's device. Pass a ``torch.Generator`` for reproducible draws: random numbers are then drawn
on the generator's device and moved to the batch (a CPU generator works for CUDA batches).

Mixup changes the targets: :class:`Mixup` returns soft targets of shape (N, C), which
``torch.nn.CrossEntropyLoss`` accepts directly as class probabilities (float targets, torch >= 1.10);
:func:`mixup` returns the pair of hard targets and λ for losses that want indices
(``loss = λ·ℓ(out, y_a) + (1-λ)·ℓ(out, y_b)``, see :meth:`MixupBatch.loss`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import TrainmedicError, describe_shape

Augmentation = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _rand(shape: Sequence[int], gen: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    dtype = like.dtype if like.is_floating_point() else torch.float32
    if gen is None:
        return torch.rand(*shape, device=like.device, dtype=dtype)
    return torch.rand(*shape, generator=gen, device=gen.device, dtype=dtype).to(like.device)


def _randn(shape: Sequence[int], gen: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    if gen is None:
        return torch.randn(*shape, device=like.device, dtype=like.dtype)
    return torch.randn(*shape, generator=gen, device=gen.device, dtype=like.dtype).to(like.device)


def _randint(
    high: int, shape: Sequence[int], gen: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    if gen is None:
        return torch.randint(0, high, tuple(shape), device=device)
    return torch.randint(0, high, tuple(shape), generator=gen, device=gen.device).to(device)


def _check_images(x: torch.Tensor, who: str) -> None:
    if x.dim() != 4:
        raise TrainmedicError(
            f"`x` of {who} must be an image batch of shape (N, C, H, W); got {describe_shape(x)}"
        )


def _check_float(x: torch.Tensor, who: str) -> None:
    if not x.is_floating_point():
        raise TrainmedicError(f"`x` of {who} must be a floating-point tensor; got {x.dtype}")


@dataclass
class RandomHorizontalFlip:
    """Mirror each image left-right with probability ``p``."""

    p: float = 0.5
    generator: torch.Generator | None = None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_images(x, "RandomHorizontalFlip")
        flip = _rand((x.shape[0],), self.generator, x) < self.p
        return torch.where(flip[:, None, None, None], x.flip(-1), x), y


@dataclass
class RandomCrop:
    """Pad each image by ``padding`` pixels, then cut an (H, W) window at a random offset: a random shift of
    up to ``padding`` pixels. ``mode`` is ``F.pad``'s (``constant`` pads with ``fill``, or ``reflect``...)."""

    padding: int = 4
    mode: str = "constant"
    fill: float = 0.0
    generator: torch.Generator | None = None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_images(x, "RandomCrop")
        p = int(self.padding)
        if p <= 0:
            return x, y
        n, _, h, w = x.shape
        if self.mode == "constant":
            padded = F.pad(x, (p, p, p, p), mode="constant", value=self.fill)
        else:
            padded = F.pad(x, (p, p, p, p), mode=self.mode)
        oy = _randint(2 * p + 1, (n,), self.generator, x.device)
        ox = _randint(2 * p + 1, (n,), self.generator, x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (N, H, 1)
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (N, 1, W)
        batch = torch.arange(n, device=x.device)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[batch, rows, cols]  # (N, H, W, C)
        return out.permute(0, 3, 1, 2).contiguous(), y


@dataclass
class Cutout:
    """Zero (``fill``) one ``size`` × ``size`` square per image at a random centre (clipped at the border)."""

    size: int = 8
    fill: float = 0.0
    generator: torch.Generator | None = None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_images(x, "Cutout")
        n, _, h, w = x.shape
        cy = _randint(h, (n,), self.generator, x.device)
        cx = _randint(w, (n,), self.generator, x.device)
        top = (cy - self.size // 2)[:, None]
        left = (cx - self.size // 2)[:, None]
        ar_h = torch.arange(h, device=x.device)[None, :]
        ar_w = torch.arange(w, device=x.device)[None, :]
        in_rows = (ar_h >= top) & (ar_h < top + self.size)  # (N, H)
        in_cols = (ar_w >= left) & (ar_w < left + self.size)  # (N, W)
        mask = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # (N, 1, H, W)
        return x.masked_fill(mask, self.fill), y


@dataclass
class GaussianNoise:
    """Add N(0, ``std``²) noise (absolute scale: for inputs already standardized, or images in [0, 1])."""

    std: float = 0.05
    generator: torch.Generator | None = None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_float(x, "GaussianNoise")
        return x + self.std * _randn(x.shape, self.generator, x), y


@dataclass
class FeatureNoise:
    """Add noise of ``scale`` × each feature's std (the last dimension is the feature axis), so a feature
    measured in thousands and one in fractions are perturbed alike. ``feature_std`` fixes the std (e.g. the
    training set's); otherwise it is measured on the batch (over all but the last dimension)."""

    scale: float = 0.1
    feature_std: torch.Tensor | None = None
    generator: torch.Generator | None = None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_float(x, "FeatureNoise")
        if self.feature_std is not None:
            std = self.feature_std.to(device=x.device, dtype=x.dtype)
        elif x.numel() // x.shape[-1] > 1:
            std = x.reshape(-1, x.shape[-1]).std(dim=0)
        else:
            std = torch.ones(x.shape[-1], device=x.device, dtype=x.dtype)
        return x + self.scale * std * _randn(x.shape, self.generator, x), y


@dataclass
class FeatureDropout:
    """Zero each feature of each sample with probability ``p`` (no rescaling: it simulates missing values,
    it is not dropout regularization). For sequences (N, L, F) a feature is dropped at all time steps."""

    p: float = 0.1
    generator: torch.Generator | None = None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() < 2:
            raise TrainmedicError(
                f"`x` of FeatureDropout must be (N, F) or (N, L, F); got {describe_shape(x)}"
            )
        shape = [x.shape[0]] + [1] * (x.dim() - 2) + [x.shape[-1]]
        keep = _rand(shape, self.generator, x) >= self.p
        return x * keep.to(x.dtype), y


def _soft_targets(y: torch.Tensor, num_classes: int | None, dtype: torch.dtype) -> torch.Tensor:
    if y.is_floating_point() and y.dim() == 2:
        return y.to(dtype)
    if y.dim() != 1 or y.is_floating_point():
        raise TrainmedicError(
            f"`y` for mixup must be class indices (N,) or probabilities (N, C); got {y.dtype} {describe_shape(y)}"
        )
    if num_classes is None:
        raise TrainmedicError("`num_classes` must be given to mix class-index targets; got None")
    return F.one_hot(y.long(), num_classes).to(dtype)


def _mix_lambda(alpha: float, gen: torch.Generator | None) -> float:
    """λ ~ Beta(alpha, alpha), drawn from a numpy generator seeded from ``gen`` (torch's Beta takes none)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device if gen else "cpu"))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


@dataclass
class MixupBatch:
    """A mixed batch: ``x = λ x + (1-λ) x[perm]``, with both hard targets."""

    x: torch.Tensor
    y_a: torch.Tensor
    y_b: torch.Tensor
    lam: float

    def loss(
        self, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], outputs: torch.Tensor
    ) -> torch.Tensor:
        return self.lam * loss_fn(outputs, self.y_a) + (1.0 - self.lam) * loss_fn(outputs, self.y_b)


def mixup(
    x: torch.Tensor, y: torch.Tensor, alpha: float = 0.2, generator: torch.Generator | None = None
) -> MixupBatch:
    """Mix each sample with a random partner of the same batch; one λ ~ Beta(alpha, alpha) per batch."""
    if not alpha > 0:
        raise TrainmedicError(f"`alpha` must be > 0; got {alpha!r}")
    _check_float(x, "mixup")
    lam = _mix_lambda(alpha, generator)
    perm = _randperm(x.shape[0], generator, x.device)
    return MixupBatch(lam * x + (1.0 - lam) * x[perm], y, y[perm], lam)


def _randperm(n: int, gen: torch.Generator | None, device: torch.device) -> torch.Tensor:
    if gen is None:
        return torch.randperm(n, device=device)
    return torch.randperm(n, generator=gen, device=gen.device).to(device)


@dataclass
class Mixup:
    """Mixup returning soft targets (N, C): use with ``CrossEntropyLoss`` (probability targets) or any loss
    that takes class probabilities. Class-index targets need ``num_classes``."""

    alpha: float = 0.2
    num_classes: int | None = None
    generator: torch.Generator | None = None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = x.dtype if x.is_floating_point() else torch.float32
        soft = _soft_targets(y, self.num_classes, dtype)
        m = mixup(x, soft, self.alpha, self.generator)
        return m.x, m.lam * m.y_a + (1.0 - m.lam) * m.y_b


class Compose:
    """Apply augmentations in order."""

    def __init__(self, augmentations: Sequence[Augmentation]) -> None:
        self.augmentations = list(augmentations)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for aug in self.augmentations:
            x, y = aug(x, y)
        return x, y

    def __repr__(self) -> str:
        return f"Compose({self.augmentations!r})"


def make_augmentation(
    input_shape: Sequence[int],
    kind: str = "auto",
    generator: torch.Generator | None = None,
    mixup_alpha: float | None = None,
    num_classes: int | None = None,
) -> Compose:
    """A sensible default augmentation for inputs of per-sample shape ``input_shape`` (no batch dimension).

    ``auto`` picks by rank: (C, H, W) → ``image`` (flip, crop with padding H//8, light noise); (F,) →
    ``tabular`` (feature noise 0.05 std, feature dropout 0.05); (L, F) → ``sequence`` (feature noise only:
    dropping a feature at every step is too strong for short sequences). ``mixup_alpha`` appends
    :class:`Mixup` (which turns targets into probabilities; needs ``num_classes``).
    """
    shape = tuple(int(s) for s in input_shape)
    kinds = ("auto", "image", "tabular", "sequence")
    if kind not in kinds:
        raise TrainmedicError(f"`kind` must be one of {', '.join(kinds)}; got {kind!r}")
    if kind == "auto":
        by_rank = {1: "tabular", 2: "sequence", 3: "image"}
        if len(shape) not in by_rank:
            raise TrainmedicError(
                f"`input_shape` must be a per-sample shape (F,), (L, F) or (C, H, W); got {shape}"
            )
        kind = by_rank[len(shape)]
    augs: list[Augmentation]
    if kind == "image":
        if len(shape) != 3:
            raise TrainmedicError(f"`input_shape` for kind='image' must be (C, H, W); got {shape}")
        pad = max(1, min(shape[1], shape[2]) // 8)
        augs = [
            RandomHorizontalFlip(0.5, generator),
            RandomCrop(pad, "constant", 0.0, generator),
            GaussianNoise(0.01, generator),
        ]
    elif kind == "tabular":
        augs = [FeatureNoise(0.05, None, generator), FeatureDropout(0.05, generator)]
    else:
        augs = [FeatureNoise(0.05, None, generator)]
    if mixup_alpha is not None:
        augs.append(Mixup(mixup_alpha, num_classes, generator))
    return Compose(augs)
