"""A tiny real GAN (MLP generator and discriminator on a ring of 2-D Gaussians) for the GAN checks.

Synthetic data, no downloads: ``modes`` Gaussians of std ``std`` evenly spaced on a circle of radius
``radius``. ``train_gan(config, run)`` watches both models with both optimizers
(``run.watch({"G": g, "D": d}, {"G": opt_g, "D": opt_d})``, so optimizer signals are ``G/grad_norm``,
``D/lr`` …) and logs the signals the GAN checks read.

Signal contract (what a user's GAN loop should log for :mod:`trainmedic.checks.gan`):

==================  =========================================================================================
signal              meaning
==================  =========================================================================================
``loss_d``          discriminator loss per generator step: BCE(D(real), 1) + BCE(D(G(z)), 0), the last of
                    the ``d_steps`` updates; ≈ 2 ln 2 = 1.39 at balance, → 0 when D wins every round
``loss_g``          generator loss per generator step (non-saturating: BCE(D(G(z)), 1)); ≈ ln 2 at balance
``diversity``       every ``diversity_every`` generator steps: mean pairwise Euclidean distance of
                    ``diversity_samples`` generated points (≈ 4·radius/π = 2.5 when the ring is covered,
                    ≈ std·√π when every sample sits on one mode); read by ``mode_collapse``
``modes_covered``   at the same steps: number of modes that hold at least a quarter of their fair share
                    of the generated points near them (a readable companion of ``diversity``)
==================  =========================================================================================

Configs are dicts over :data:`GAN_DEFAULTS` (an unknown key is an error, so a typo never silently does
nothing); :data:`GAN_SCENARIOS` names a healthy run and the two provoked failures.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import TrainmedicError

GAN_DEFAULTS: dict[str, Any] = {
    "modes": 8,  # Gaussians on the ring
    "radius": 2.0,  # ring radius
    "std": 0.05,  # std of each Gaussian
    "noise_dim": 8,  # generator input size
    "g_width": 64,  # generator hidden units
    "g_depth": 2,  # generator hidden layers
    "d_width": 64,  # discriminator hidden units
    "d_depth": 2,  # discriminator hidden layers
    "lr_g": 1e-3,  # generator Adam learning rate
    "lr_d": 1e-3,  # discriminator Adam learning rate
    "d_steps": 1,  # discriminator updates per generator update
    "steps": 400,  # generator steps
    "batch_size": 128,  # real and fake samples per step
    "diversity_every": 10,  # log diversity every this many generator steps
    "diversity_samples": 256,  # generated points scored for diversity
    "seed": 0,  # seed of data, models and noise
}

GAN_SCENARIOS: dict[str, dict[str, Any]] = {
    # balanced: equal sizes and learning rates, Adam(0.5, 0.999)
    "gan_healthy": {},
    # a wider, deeper discriminator at 100x the generator's learning rate (at 33x the generator escapes
    # after ~200 steps on some seeds and D's loss climbs back)
    "gan_d_overpowering": {"d_width": 128, "d_depth": 3, "lr_d": 1e-3, "lr_g": 1e-5},
    # a generator at 100x the discriminator's learning rate flings its samples out, then piles them on
    # whatever point the slow discriminator currently rates most real
    "gan_mode_collapse": {"lr_g": 1e-2, "lr_d": 1e-4},
}


def resolve_gan_config(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Merge ``config`` over :data:`GAN_DEFAULTS`; unknown keys are an error (a typo must not do nothing)."""
    config = dict(config or {})
    unknown = sorted(set(config) - set(GAN_DEFAULTS))
    if unknown:
        raise TrainmedicError(
            f"`config` keys must be among {', '.join(GAN_DEFAULTS)}; got unknown {', '.join(unknown)}"
        )
    return {**GAN_DEFAULTS, **config}


def ring_centers(modes: int, radius: float) -> torch.Tensor:
    """Centres of the mixture, shape (modes, 2)."""
    a = torch.arange(modes, dtype=torch.float32) * (2 * math.pi / modes)
    return torch.stack([radius * torch.cos(a), radius * torch.sin(a)], dim=1)


def sample_ring(n: int, centers: torch.Tensor, std: float, gen: torch.Generator) -> torch.Tensor:
    """``n`` points of the ring mixture (uniform over modes)."""
    idx = torch.randint(len(centers), (n,), generator=gen)
    return centers[idx] + std * torch.randn(n, 2, generator=gen)


def _mlp(inp: int, width: int, depth: int, out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = inp
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.LeakyReLU(0.2)]
        d = width
    layers.append(nn.Linear(d, out))
    return nn.Sequential(*layers)


def build_gan(config: Mapping[str, Any]) -> tuple[nn.Sequential, nn.Sequential]:
    """Generator (noise → 2-D point) and discriminator (2-D point → logit) from a resolved config."""
    g = _mlp(config["noise_dim"], config["g_width"], config["g_depth"], 2)
    d = _mlp(2, config["d_width"], config["d_depth"], 1)
    return g, d


def pairwise_diversity(x: torch.Tensor) -> float:
    """Mean pairwise Euclidean distance of the rows of ``x`` (diagonal excluded)."""
    n = len(x)
    return float(torch.cdist(x, x).sum() / (n * (n - 1)))


def modes_covered(x: torch.Tensor, centers: torch.Tensor, std: float) -> int:
    """Modes holding at least a quarter of their fair share of ``x`` near their centre (within 3·std, or a
    quarter of the gap between neighbouring centres when that is wider: a short run blurs the modes)."""
    gap = float(torch.dist(centers[0], centers[1])) if len(centers) > 1 else 0.0
    dist = torch.cdist(x, centers)
    near, idx = dist.min(dim=1)
    counts = torch.bincount(idx[near < max(3 * std, gap / 4)], minlength=len(centers))
    return int((counts >= 0.25 * len(x) / len(centers)).sum())


def train_gan(config: Mapping[str, Any] | None, run: Any) -> dict[str, float]:
    """Train the ring GAN of ``config`` under ``run`` (a :func:`trainmedic.watch` run with no model yet).

    Returns the last ``diversity`` and ``modes_covered`` so callers can confirm what the run really did.
    """
    c = resolve_gan_config(config)
    torch.manual_seed(c["seed"])
    gen = torch.Generator().manual_seed(c["seed"])
    centers = ring_centers(c["modes"], c["radius"])
    g, d = build_gan(c)
    opt_g = torch.optim.Adam(g.parameters(), lr=c["lr_g"], betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=c["lr_d"], betas=(0.5, 0.999))
    run.watch({"G": g, "D": d}, {"G": opt_g, "D": opt_d})
    bce = nn.BCEWithLogitsLoss()
    n, zdim = c["batch_size"], c["noise_dim"]
    ones, zeros = torch.ones(n, 1), torch.zeros(n, 1)
    z_eval = torch.randn(c["diversity_samples"], zdim, generator=gen)
    last = {"diversity": float("nan"), "modes_covered": float("nan")}
    for step in range(1, c["steps"] + 1):
        for _ in range(c["d_steps"]):
            real = sample_ring(n, centers, c["std"], gen)
            with torch.no_grad():
                fake = g(torch.randn(n, zdim, generator=gen))
            opt_d.zero_grad()
            loss_d = bce(d(real), ones) + bce(d(fake), zeros)
            loss_d.backward()
            opt_d.step()
        opt_g.zero_grad()
        loss_g = bce(d(g(torch.randn(n, zdim, generator=gen))), ones)
        loss_g.backward()
        opt_g.step()
        run.log(loss_d=loss_d.detach(), loss_g=loss_g.detach())
        if step % c["diversity_every"] == 0:
            with torch.no_grad():
                x = g(z_eval)
            last = {
                "diversity": pairwise_diversity(x),
                "modes_covered": float(modes_covered(x, centers, c["std"])),
            }
            run.log(**last)
    return last


def run_gan(
    name_or_config: str | Mapping[str, Any],
    run_dir: str | os.PathLike[str],
    thresholds: Mapping[str, Any] | None = None,
) -> Any:
    """Train a :data:`GAN_SCENARIOS` entry (or a config) into ``run_dir`` (overwritten) and diagnose it."""
    from ..checks import diagnose
    from ..watch import watch

    if isinstance(name_or_config, str):
        if name_or_config not in GAN_SCENARIOS:
            raise TrainmedicError(
                f"`name_or_config` must be a GAN scenario ({', '.join(GAN_SCENARIOS)}) or a config dict; "
                f"got {name_or_config!r}"
            )
        config: Mapping[str, Any] = GAN_SCENARIOS[name_or_config]
        name: str | None = name_or_config
    else:
        config, name = name_or_config, None
    run = watch(run_dir=run_dir, overwrite=True, quiet=True, name=name, config=resolve_gan_config(config))
    try:
        train_gan(config, run)
    finally:
        run.close()
    return diagnose(run_dir, thresholds=thresholds)
