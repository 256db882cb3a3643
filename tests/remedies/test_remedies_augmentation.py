from __future__ import annotations

import pytest
import torch
from torch import nn

from trainmedic.errors import TrainmedicError
from trainmedic.remedies import (
    Compose,
    Cutout,
    FeatureDropout,
    FeatureNoise,
    GaussianNoise,
    Mixup,
    RandomCrop,
    RandomHorizontalFlip,
    make_augmentation,
    mixup,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.rand(16, 3, 12, 10), torch.arange(16) % 4


def test_flip_flips_some_and_keeps_labels() -> None:
    x, y = _images()
    out, y2 = RandomHorizontalFlip(0.5, _gen())(x, y)
    assert out.shape == x.shape and torch.equal(y2, y)
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(16)]
    same = [torch.equal(out[i], x[i]) for i in range(16)]
    assert all(f or s for f, s in zip(flipped, same)) and 0 < sum(flipped) < 16


def test_crop_is_a_shift_of_the_padded_image() -> None:
    x, y = _images()
    out, _ = RandomCrop(2, generator=_gen())(x, y)
    assert out.shape == x.shape
    padded = nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(16):
        assert any(
            torch.equal(out[i], padded[i, :, dy : dy + 12, dx : dx + 10])
            for dy in range(5)
            for dx in range(5)
        )
    reflected, _ = RandomCrop(2, mode="reflect", generator=_gen())(x, y)
    assert reflected.shape == x.shape


def test_cutout_zeroes_a_square() -> None:
    x = torch.ones(8, 1, 20, 20)
    out, _ = Cutout(6, generator=_gen())(x, torch.zeros(8))
    zeros = (out == 0).sum(dim=(1, 2, 3))
    assert torch.all(zeros <= 36) and torch.all(zeros >= 9)  # clipped at a border at worst to 3x3


def test_noise_and_feature_ops() -> None:
    x = torch.randn(2000, 3) * torch.tensor([1.0, 100.0, 0.01])
    y = torch.zeros(2000)
    out, _ = FeatureNoise(0.1, generator=_gen())(x, y)
    ratio = (out - x).std(dim=0) / x.std(dim=0)
    torch.testing.assert_close(ratio, torch.full((3,), 0.1), rtol=0.1, atol=0)
    out, _ = GaussianNoise(0.5, _gen())(x, y)
    assert float((out - x).std()) == pytest.approx(0.5, rel=0.05)
    seq = torch.randn(100, 7, 5)
    out, _ = FeatureDropout(0.3, _gen())(seq, y[:100])
    dropped = (out == 0).all(dim=1)  # (N, F): a feature is dropped at all steps or none
    assert torch.equal((out == 0), dropped[:, None, :].expand_as(out))
    assert 0.2 < float(dropped.float().mean()) < 0.4


def test_reproducible_with_generator() -> None:
    x, y = _images()
    aug = make_augmentation((3, 12, 10))
    a = Compose(
        [RandomHorizontalFlip(generator=_gen(3)), RandomCrop(generator=_gen(4)), Cutout(4, generator=_gen(5))]
    )
    b = Compose(
        [RandomHorizontalFlip(generator=_gen(3)), RandomCrop(generator=_gen(4)), Cutout(4, generator=_gen(5))]
    )
    assert torch.equal(a(x, y)[0], b(x, y)[0])
    assert aug(x, y)[0].shape == x.shape


def test_mixup_soft_targets_work_with_cross_entropy() -> None:
    x, y = _images()
    xm, soft = Mixup(alpha=0.4, num_classes=4, generator=_gen())(x, y)
    assert xm.shape == x.shape and soft.shape == (16, 4)
    torch.testing.assert_close(soft.sum(1), torch.ones(16))
    logits = torch.randn(16, 4)
    loss = nn.CrossEntropyLoss()(logits, soft)
    batch = mixup(x, y, alpha=0.4, generator=_gen())
    torch.testing.assert_close(batch.x, xm)
    torch.testing.assert_close(loss, batch.loss(nn.CrossEntropyLoss(), logits))
    with pytest.raises(TrainmedicError, match="`num_classes`"):
        Mixup()(x, y)


def test_make_augmentation_by_rank() -> None:
    names = lambda c: [type(a).__name__ for a in c.augmentations]  # noqa: E731
    assert names(make_augmentation((3, 32, 32))) == ["RandomHorizontalFlip", "RandomCrop", "GaussianNoise"]
    assert names(make_augmentation((20,))) == ["FeatureNoise", "FeatureDropout"]
    assert names(make_augmentation((50, 8))) == ["FeatureNoise"]
    assert names(make_augmentation((20,), mixup_alpha=0.2, num_classes=3))[-1] == "Mixup"
    x, y = torch.randn(8, 20), torch.arange(8) % 3
    out, y2 = make_augmentation((20,), generator=_gen())(x, y)
    assert out.shape == x.shape and torch.equal(y2, y)
    with pytest.raises(TrainmedicError, match="`input_shape`"):
        make_augmentation((1, 2, 3, 4))
    with pytest.raises(TrainmedicError, match="image batch"):
        RandomHorizontalFlip()(torch.randn(4, 5), y)
