"""Activation and initialization checks: gradient masking (dead/saturated units), bad initialization."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..findings import Finding, Severity
from ._stats import first_true, fmt, window_means
from .context import Context, confidence
from .registry import check


@check(
    "gradient_masking",
    requires=("activations",),
    thresholds=("dead_fraction", "saturated_fraction"),
    remedies=("non_saturating_activation", "lower_learning_rate", "he_init", "xavier_init", "batch_norm"),
    what="Per activation layer, the median (over the second half of training) share of dead ReLU units "
    "(never positive on any sampled row) reaches `dead_fraction`, or the share of saturated "
    "sigmoid/tanh outputs reaches `saturated_fraction`. Or *outputs squashed before the loss*: the loss is a "
    "mean cross-entropy (its first tenth lies within 0.6x–1.6x of ln C, where an untrained model's "
    "cross-entropy starts) and its lowest tenth stays above 75% of ln C while the training accuracy reaches "
    "max(`underfit_train_accuracy`, halfway from chance to 100%) and the loss is above halfway from the "
    "entropy of that accuracy (what a calibrated model that right has at most) to ln C: right answers with near-uniform "
    "probabilities — a Sigmoid, Softmax or Tanh between the last layer and the loss. The activation that "
    "follows a model's output layer is not judged saturated: a confident classifier's sigmoid output sits on "
    "its flat tails by design, and the loss's gradient (p - y under cross-entropy) does not pass through them.",
    why="A dead ReLU passes no gradient and a saturated sigmoid/tanh passes almost none: the weights "
    "feeding those units stop learning, and the layer's capacity is lost.",
    evidence="dead/saturated share per activation layer, the worst layer, the first step it exceeded "
    "the threshold",
)
def check_gradient_masking(ctx: Context) -> Finding | None:
    hits: list[dict[str, Any]] = []
    outputs = _output_activations(ctx)
    for stat, thr, what in (
        ("act_dead", ctx.t.dead_fraction, "dead"),
        ("act_saturated", ctx.t.saturated_fraction, "saturated"),
    ):
        ls = ctx.layer(stat)
        if ls.values.size == 0:
            continue
        half = ls.values[len(ls.values) // 2 :].astype(np.float64)
        for j, name in enumerate(ls.layers):
            if what == "saturated" and name in outputs:
                continue  # the output's own squashing: a confident prediction, not a masked gradient
            col = half[:, j]
            col = col[np.isfinite(col)]
            if col.size == 0:
                continue
            med = float(np.median(col))
            if med >= thr:
                full = ls.values[:, j]
                began = first_true(np.nan_to_num(full, nan=0.0) >= thr)
                hits.append(
                    {
                        "layer": name,
                        "kind": what,
                        "share": med,
                        "threshold": thr,
                        "first_step": int(ls.steps[began]) if began is not None else None,
                        "samples": int(col.size),
                    }
                )
    if not hits:
        return _squashed_outputs(ctx)
    worst = max(hits, key=lambda h: h["share"] - h["threshold"])
    kinds = {h["kind"] for h in hits}
    layers = ", ".join(f"{h['layer']} {h['share']:.0%} {h['kind']}" for h in hits[:4])
    more = f" and {len(hits) - 4} more" if len(hits) > 4 else ""
    msg = (
        f"{len(hits)} activation layer(s) pass little gradient: {layers}{more} "
        f"(thresholds: dead ≥ {ctx.t.dead_fraction:.0%}, saturated ≥ {ctx.t.saturated_fraction:.0%})"
    )
    if "saturated" in kinds:
        remedies = [
            ("non_saturating_activation", "ReLU-family activations do not saturate for positive inputs"),
            ("xavier_init", "keeps pre-activations small enough to stay off the flat tails"),
            ("batch_norm", "re-centres pre-activations into the sensitive range"),
            ("lower_learning_rate", "large updates push units into saturation"),
        ]
    else:
        remedies = [
            (
                "non_saturating_activation",
                "LeakyReLU/SiLU keep a gradient for negative inputs, so units can revive",
            ),
            ("lower_learning_rate", "large updates knock ReLU units into the always-negative region"),
            ("he_init", "a proper initial scale keeps about half the units active"),
            ("batch_norm", "re-centres pre-activations so units keep firing"),
        ]
    margin = (worst["share"] - worst["threshold"]) / max(1e-9, 1 - worst["threshold"])
    return ctx.finding(
        Severity.WARNING,
        msg,
        {"layers": hits, "worst_layer": worst["layer"], "worst_share": worst["share"]},
        remedies,
        confidence(2 * margin, min(1.0, worst["samples"] / 5)),
        step=worst["first_step"],
        layer=worst["layer"],
    )


def _output_activations(ctx: Context) -> set[str]:
    """Names (in the activation statistics) of the activations applied to each model's output: the one that
    follows its last parameter layer in the model summary and has that layer's width (``meta
    ["activation_widths"]``; a Keras layer's own activation is its output). Module order alone is not enough: a
    shared ``self.act = nn.Tanh()`` registered after the output layer is a hidden activation, with the hidden
    width. Runs recorded without these fields: none."""
    out: set[str] = set()
    widths = ctx.r.meta.get("activation_widths")
    for m in ctx.models:
        layers = [lay for lay in m.get("layers", []) if isinstance(lay, dict) and not lay.get("norm")]
        if not layers:
            continue
        last = layers[-1]
        name = last.get("activation_module")
        if not isinstance(name, str):
            continue
        if m.get("framework") == "keras" and name == last.get("name"):
            out.add(name)
            continue
        init = last.get("init")
        shape = init.get("shape") if isinstance(init, dict) else None
        width = widths.get(name) if isinstance(widths, dict) else None
        if isinstance(shape, list) and shape and isinstance(width, int) and int(shape[0]) == width:
            out.add(name)
    return out


@check(
    "bad_initialization",
    requires=("model_summary",),
    thresholds=("init_scale_low", "init_scale_high"),
    remedies=("he_init", "xavier_init", "batch_norm"),
    what="At the start of training, a hidden weight layer's standard deviation is below `init_scale_low` "
    "or above `init_scale_high` times the He (ReLU family) or Xavier (others) scale for its fan-in (by at "
    "least 2 relative standard errors of a std estimated from the layer's n weights, 1/sqrt(2(n-1))), or "
    "all its units are identical (symmetric). The output layer is exempt (zero-initialized heads are "
    "fine), and so are embeddings and recurrent layers (their own conventions). In a model with normalization "
    "layers (LayerNorm, BatchNorm …) a small init is not judged: the normalization rescales the signal (BERT's "
    "N(0, 0.02) is a sound start).",
    why="Too small an init shrinks the signal layer after layer (nothing learns), too large explodes or "
    "saturates it, and identical units receive identical gradients forever, so a layer of N units "
    "behaves like one.",
    evidence="per layer: initial std, the reference std, their ratio, identical units; gradient norms "
    "at the first recorded step",
)
def check_bad_initialization(ctx: Context) -> Finding | None:
    bad: list[dict[str, Any]] = []
    for m in ctx.models:
        layers = [
            lay for lay in m.get("layers", []) if isinstance(lay.get("init"), dict) and not lay.get("norm")
        ]
        # normalization layers (LayerNorm in a Transformer, BatchNorm in a CNN) rescale the signal whatever the
        # weights' scale: a small init (BERT's N(0, 0.02)) starts such a model well
        normalized = bool(m.get("normalization")) or any(lay.get("norm") for lay in m.get("layers", []))
        for lay in layers[:-1]:  # the output layer may start at zero
            init = lay["init"]
            kind = lay.get("activation_kind")
            ref_name = "he_std" if kind in ("relu", "leaky") else "xavier_std"
            ref = float(init.get(ref_name) or 0.0)
            # the scale of the weights, symmetric or not: a constant init has std 0 but a real magnitude
            std = max(float(init.get("std") or 0.0), float(init.get("mean_abs") or 0.0))
            ratio = std / ref if ref > 0 else float("nan")
            # a lookup table is not a layer that keeps signal variance: N(0, 1) rows are PyTorch's default
            skip_scale = lay.get("recurrent") or "Embedding" in str(lay.get("type") or "")
            # sampling noise of a std estimated from n weights: relative standard error 1/sqrt(2(n-1));
            # the ratio must clear the range by 2 of them (a 1x1 layer's "std" says nothing)
            n_w = int(np.prod(init.get("shape") or [0])) or 0
            slack = float(np.exp(2.0 / np.sqrt(2.0 * max(n_w - 1, 1)))) if n_w else 1.0
            problems = []
            if init.get("identical_units"):
                problems.append("identical units")
            if not skip_scale and np.isfinite(ratio):
                if ratio * slack < ctx.t.init_scale_low and not normalized:
                    problems.append("too small")
                elif ratio / slack > ctx.t.init_scale_high:
                    problems.append("too large")
            if problems:
                bad.append(
                    {
                        "layer": lay["name"],
                        "problems": problems,
                        "std": std,
                        "reference": ref_name.replace("_std", ""),
                        "reference_std": ref,
                        "ratio": ratio,
                        "activation": lay.get("activation"),
                    }
                )
    if not bad:
        return None
    # early signal: gradient norms of those layers at the first recorded step
    ls = ctx.layer("grad_norm")
    early: dict[str, float] = {}
    if ls.values.size:
        for b in bad:
            if b["layer"] in ls.layers:
                early[b["layer"]] = float(ls.values[0, ls.layers.index(b["layer"])])
    zero_grad = [n for n, g in early.items() if g == 0.0]
    first = bad[0]
    desc = ", ".join(
        f"{b['layer']} ({' and '.join(b['problems'])}: std {fmt(b['std'])} = {fmt(b['ratio'])}x {b['reference']})"
        for b in bad[:4]
    )
    more = f" and {len(bad) - 4} more" if len(bad) > 4 else ""
    msg = (
        f"{len(bad)} hidden layer(s) start badly: {desc}{more}; accepted range "
        f"{fmt(ctx.t.init_scale_low)}x–{fmt(ctx.t.init_scale_high)}x the He/Xavier std"
    )
    if zero_grad:
        msg += f"; {len(zero_grad)} of them had exactly zero gradient at the first step"
    relu = any(b["reference"] == "he" for b in bad)
    remedies = [
        (
            "he_init" if relu else "xavier_init",
            "the scale that keeps signal variance constant through these layers",
        ),
        (
            "xavier_init" if relu else "he_init",
            "for layers that feed tanh/sigmoid" if relu else "for ReLU-family layers",
        ),
        ("batch_norm", "makes training far less sensitive to the initial scale"),
    ]
    margins = []
    for b in bad:
        if "identical units" in b["problems"]:
            margins.append(2.0)
        elif np.isfinite(b["ratio"]) and b["ratio"] > 0:
            lim = ctx.t.init_scale_low if b["ratio"] < 1 else ctx.t.init_scale_high
            margins.append(abs(np.log10(b["ratio"] / lim)))
    return ctx.finding(
        Severity.WARNING,
        msg,
        {"layers": bad, "grad_norm_first_step": early, "zero_gradient_layers": zero_grad},
        remedies,
        confidence(max(margins, default=0.5)),
        step=0,
        layer=first["layer"],
    )


def _squashed_outputs(ctx: Context) -> Finding | None:
    """Outputs squashed before the loss: the loss is a mean cross-entropy (it starts within 0.6x-1.6x of
    the chance level ln C, as a cross-entropy of an untrained model does) and ends above 75% of ln C, while
    the training split's accuracy is far above chance (halfway from chance to 100%, and at least
    `underfit_train_accuracy`). Mostly-right predictions with near-uniform probabilities mean the logits
    cannot grow: a Sigmoid, Softmax or Tanh between the last layer and ``CrossEntropyLoss``."""
    tr = ctx.train_split
    if tr is None or ctx.loss is None or ctx.diverged or ctx.loss.values.size < 20:
        return None
    counts = ctx.class_counts(tr)
    acc = ctx.finite_eval(tr, "accuracy")
    if counts is None or len(counts) < 2 or counts.sum() == 0 or acc.size == 0:
        return None
    ln_c = math.log(len(counts))
    chance = float(counts.max() / counts.sum())
    m = window_means(ctx.loss.values[np.isfinite(ctx.loss.values)], 10)
    # the lowest stretch, not the end: a loss that got low and blew up later is instability, not squashing
    start, end = float(m[0]), float(m.min())
    final = float(acc[-2:].mean())
    if not (0.6 * ln_c <= start <= 1.6 * ln_c and end >= 0.75 * ln_c):
        return None
    if not final >= max(ctx.t.underfit_train_accuracy, chance + 0.5 * (1.0 - chance)):
        return None
    # a calibrated model right with probability `final` has a cross-entropy of at most the entropy of that
    # confidence (spread over the other classes); well above it, the probabilities are too flat to be its
    k = len(counts)
    a = min(max(final, 1e-6), 1.0 - 1e-6)
    bound = -(a * math.log(a) + (1.0 - a) * math.log(1.0 - a)) + (1.0 - a) * math.log(max(k - 1, 1))
    if not end >= bound + 0.5 * (ln_c - bound):
        return None
    msg = (
        f"the outputs are squashed before the loss: {tr} accuracy is {final:.1%} while the loss never went below "
        f"{fmt(end)}, {end / ln_c:.0%} of the chance level ln {len(counts)} = {fmt(ln_c)} (it started at "
        f"{fmt(start)}): the predictions are mostly right with near-uniform probabilities, so the logits "
        "cannot grow — a Sigmoid, Softmax or Tanh between the last layer and CrossEntropyLoss"
    )
    return ctx.finding(
        Severity.WARNING,
        msg,
        {
            "kind": "squashed_outputs",
            "train_accuracy": final,
            "loss_start": start,
            "loss_end": end,
            "chance_loss": ln_c,
            "calibrated_bound": bound,
            "noise": "loss window means (10 windows) against fractions of ln C; no sampling noise needed",
        },
        [("non_saturating_activation", "remove the output activation: CrossEntropyLoss takes raw logits")],
        confidence((end / ln_c - 0.75) * 8.0, 1.0),
        step=int(ctx.loss.steps[-1]),
    )
