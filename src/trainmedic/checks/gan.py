"""GAN checks on user-logged signals: discriminator overpowering (``loss_d``/``loss_g``), mode collapse
(``diversity``, e.g. mean pairwise distance of a batch of generated samples)."""

from __future__ import annotations

import numpy as np

from ..findings import Finding, Severity
from ._stats import fmt, window_means
from .context import Context, confidence
from .registry import check


@check(
    "discriminator_overpowering",
    requires=("gan_losses",),
    thresholds=("gan_d_loss_fraction",),
    remedies=("lower_learning_rate", "change_loss", "add_dropout"),
    what="The discriminator loss (`loss_d`, `d_loss` or `discriminator/loss`) ends below "
    "`gan_d_loss_fraction` of where it started while the generator loss (`loss_g`, …) ends above where "
    "it started (means of the first and last tenth).",
    why="A discriminator that wins every round gives the generator vanishing, uninformative gradients; "
    "the generator stops improving.",
    evidence="D and G loss at start and end, their ratio",
)
def check_discriminator_overpowering(ctx: Context) -> Finding | None:
    assert ctx.gan_losses is not None
    (dn, d), (gn, g) = ctx.gan_losses
    if len(d) < 20 or len(g) < 20 or not (np.isfinite(d.values).all() and np.isfinite(g.values).all()):
        return None
    dm, gm = window_means(d.values, 10), window_means(g.values, 10)
    d_frac = float(dm[-1] / dm[0]) if dm[0] > 0 else float("nan")
    g_rise = float(gm[-1] / gm[0]) if gm[0] > 0 else float("nan")
    thr = ctx.t.gan_d_loss_fraction
    if not (d_frac < thr and g_rise > 1.0):
        return None
    return ctx.finding(
        Severity.WARNING,
        f"{dn} fell to {d_frac:.1%} of its start ({fmt(dm[0])} → {fmt(dm[-1])}; threshold {thr:.0%}) while {gn} "
        f"rose {fmt(g_rise)}x ({fmt(gm[0])} → {fmt(gm[-1])})",
        {
            "d_loss_start": float(dm[0]),
            "d_loss_end": float(dm[-1]),
            "d_fraction": d_frac,
            "g_loss_start": float(gm[0]),
            "g_loss_end": float(gm[-1]),
            "g_rise": g_rise,
        },
        [
            (
                "lower_learning_rate",
                "slow the discriminator down (lower its learning rate or update it less often)",
            ),
            ("change_loss", "a non-saturating or Wasserstein loss keeps generator gradients alive"),
            ("add_dropout", "dropout or label smoothing in the discriminator weakens it"),
        ],
        confidence(np.log(thr / max(d_frac, 1e-9)) + np.log(g_rise)),
    )


@check(
    "mode_collapse",
    requires=("diversity",),
    thresholds=("mode_collapse_drop",),
    remedies=("change_loss", "lower_learning_rate"),
    what="The logged generator-output diversity signal (`diversity`) ends at least `mode_collapse_drop` "
    "below its maximum (means of tenths of the run).",
    why="A collapsed generator produces the same few outputs whatever its input: it fools the "
    "discriminator without modelling the data.",
    evidence="diversity maximum and end value, relative drop",
)
def check_mode_collapse(ctx: Context) -> Finding | None:
    assert ctx.diversity is not None
    name, s = ctx.diversity
    v = s.values[np.isfinite(s.values)]
    if len(v) < 10:
        return None
    m = window_means(v, 10)
    peak, end = float(m.max()), float(m[-1])
    drop = 1.0 - end / peak if peak > 0 else 0.0
    thr = ctx.t.mode_collapse_drop
    if drop < thr:
        return None
    return ctx.finding(
        Severity.WARNING,
        f"{name} fell {drop:.0%} from its peak ({fmt(peak)} → {fmt(end)}; threshold {thr:.0%})",
        {"signal": name, "peak": peak, "end": end, "drop": drop},
        [
            ("change_loss", "minibatch discrimination, unrolled or Wasserstein losses resist collapse"),
            ("lower_learning_rate", "a slower generator explores instead of jumping to one mode"),
        ],
        confidence((drop - thr) / (1 - thr) * 2),
    )
