"""Gradient checks: non-finite values, exploding gradients, vanishing gradients."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..findings import Finding, Severity
from ._stats import first_true, fmt, running_reference, sustained, window_means
from .context import Context, confidence
from .registry import check

SUSTAIN_K, SUSTAIN_OF = 3, 5
EXPLODING_REMEDIES = [
    ("gradient_clipping", "caps the update size at the run's healthy gradient norm"),
    ("lower_learning_rate", "the step size drives the growth"),
    ("lr_schedule", "a warm-up avoids large early steps"),
    ("batch_norm", "keeps activations, and so gradients, in range"),
]  # the live monitor's rule: 3 of 5 consecutive steps above the ratio


@check(
    "nonfinite",
    requires_any=("loss", "grad_norm", "layer_grad_norm"),
    remedies=("lower_learning_rate", "gradient_clipping", "normalize_inputs"),
    what="NaN or Inf in the training loss, the gradient norm, any logged scalar, per-layer weights or "
    "gradients, or an evaluation loss; reports the first step and where it appeared.",
    why="One non-finite value poisons every weight it touches: training after it is wasted, and the "
    "model saved at the end is unusable.",
    evidence="first non-finite step per signal, the layer whose weights or gradients broke first, counts",
)
def check_nonfinite(ctx: Context) -> Finding | None:
    firsts: dict[str, int] = {}
    counts: dict[str, int] = {}
    for name in ctx.r.scalar_names:
        s = ctx.scalar(name)
        bad = ~np.isfinite(s.values)
        if bad.any():
            firsts[name] = int(s.steps[first_true(bad) or 0])
            counts[name] = int(bad.sum())
    layer_first: tuple[int, str, str] | None = None
    for stat in ("weight_norm", "grad_norm"):
        ls = ctx.layer(stat)
        if ls.values.size == 0:
            continue
        bad = ~np.isfinite(ls.values)
        rows = np.flatnonzero(bad.any(axis=1))
        if rows.size:
            j = int(np.flatnonzero(bad[rows[0]])[0])
            cand = (int(ls.steps[rows[0]]), ls.layers[j], stat)
            if layer_first is None or cand[0] < layer_first[0]:
                layer_first = cand
    eval_bad = {
        sp: int(ctx.eval(sp, "loss").steps[first_true(~np.isfinite(ctx.eval(sp, "loss").values)) or 0])
        for sp in ctx.splits
        if len(ctx.eval(sp, "loss")) and not np.isfinite(ctx.eval(sp, "loss").values).all()
    }
    for sp in ctx.splits:  # Run.evaluate records the share of NaN/Inf model outputs instead of scoring them
        bad_out = ctx.eval(sp, "nonfinite_outputs")
        hit = np.flatnonzero(bad_out.values > 0) if len(bad_out) else np.zeros(0, dtype=int)
        if hit.size and sp not in eval_bad:
            eval_bad[sp] = int(bad_out.steps[hit[0]])
    if not firsts and layer_first is None and not eval_bad:
        return None
    first_signal = min(firsts, key=lambda k: firsts[k]) if firsts else None
    step = firsts[first_signal] if first_signal else (layer_first[0] if layer_first else None)
    parts = []
    if first_signal is not None:
        val = ctx.scalar(first_signal).values
        kind = "NaN" if np.isnan(val[~np.isfinite(val)][0]) else "Inf"
        parts.append(f"{kind} in {first_signal} at step {step} ({counts[first_signal]} non-finite values)")
    if layer_first is not None:
        parts.append(f"{layer_first[2]} of layer {layer_first[1]} non-finite from step {layer_first[0]}")
    if eval_bad:
        parts.append(
            "evaluation loss or outputs non-finite on "
            + ", ".join(f"{sp} (epoch {e})" for sp, e in eval_bad.items())
        )
    remedies = [
        ("lower_learning_rate", "a smaller step keeps the weights finite"),
        ("gradient_clipping", "bounds each update, so one bad batch cannot blow up the weights"),
        ("normalize_inputs", "large raw inputs overflow activations"),
    ]
    gn = ctx.grad_norm
    if gn is not None and first_signal is not None and "grad_norm" not in first_signal:
        finite = gn.values[np.isfinite(gn.values) & (gn.steps < (step or 0))]
        if finite.size > 10 and finite[-5:].max() > 20 * np.median(finite):
            remedies.insert(0, remedies.pop(1))  # the gradients grew before it broke: clip first
    return ctx.finding(
        Severity.ERROR,
        "; ".join(parts),
        {
            "first_step": step,
            "signals": firsts,
            "counts": counts,
            "layer": layer_first[1] if layer_first else None,
            "layer_stat": layer_first[2] if layer_first else None,
            "layer_first_step": layer_first[0] if layer_first else None,
            "eval_nonfinite": eval_bad,
        },
        remedies,
        1.0,
        step=step,
        layer=layer_first[1] if layer_first else None,
    )


@check(
    "exploding_gradient",
    requires=("grad_norm",),
    thresholds=("explode_ratio",),
    remedies=("gradient_clipping", "lower_learning_rate", "batch_norm", "lr_schedule"),
    what="The global gradient norm exceeds `explode_ratio` x its running median (last 200 steps) for at "
    "least 3 of 5 consecutive steps, or its median grows by that factor over the run, while the loss "
    "rises or breaks. A single spike, or growth while the loss keeps falling, is not an explosion; a burst "
    "the run recovers from (gradient norm back under the threshold, loss back to where it was) is an `info` "
    "note. A run that breaks within its first 25 recorded steps is judged on growth alone: the gradient norm "
    "rose `explode_ratio`/4 times or more from its first values before turning non-finite. *Early blow-up*: "
    "within the first 25 logged steps the loss jumped to 10x its first value with a gradient norm at least "
    "`explode_ratio` x its median over the second half of the run (the first updates threw the weights out, "
    "before a running median exists): an error when the model then never learned, a note when it did.",
    why="Huge gradients make huge updates: the loss jumps, the weights leave the region where the model "
    "worked, and soon turn into NaN.",
    evidence="grad norm at the onset, running median, ratio, step it began, loss before/after, whether "
    "the run recovered",
)
def check_exploding_gradient(ctx: Context) -> Finding | None:
    assert ctx.grad_norm is not None
    s = ctx.grad_norm
    fin = np.isfinite(s.values)
    x, steps = s.values[fin], s.steps[fin]
    if len(x) < 25:
        return _short_blowup(ctx, s, fin)
    early = _early_blowup(ctx, s, fin)
    if early is not None and early.severity is Severity.ERROR:
        return early  # the first updates broke the run: what follows is its aftermath
    found = _running_explosion(ctx, s, fin, x, steps)
    return found if found is not None else early


def _running_explosion(
    ctx: Context, s: Any, fin: np.ndarray, x: np.ndarray, steps: np.ndarray
) -> Finding | None:
    """Spikes over the running median, or growth of the typical norm over the run, with the loss suffering."""
    thr = ctx.t.explode_ratio
    ref = running_reference(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(ref > 0, x / ref, np.nan)
    above = np.nan_to_num(ratio, nan=0.0) > thr
    episode = sustained(above, SUSTAIN_K, SUSTAIN_OF)
    onset_i: int | None = None
    kind = ""
    if episode.any():
        end = first_true(episode) or 0
        onset_i = int(
            np.flatnonzero(above[: end + 1])[-SUSTAIN_K] if above[: end + 1].sum() >= SUSTAIN_K else end
        )
        kind = "spike"
    # slow growth: the typical norm at the end is `thr` x the typical norm early on
    w = window_means(np.log(np.maximum(x, 1e-30)), 10)
    growth = float(np.exp(w[-1] - w[: max(1, len(w) // 5)].min()))
    broke_after = not fin.all()
    if onset_i is None and (growth >= thr or (broke_after and growth >= thr / 4)):
        onset_i = int(len(x) // 10 * (int(np.argmin(w[: max(1, len(w) // 5)])) + 1))
        kind = "growth"
    if onset_i is None:
        return None
    onset_step = int(steps[onset_i])
    # the loss must suffer: rise after the onset, or break
    loss_rise = float("nan")
    loss = ctx.loss
    if loss is not None and len(loss):
        lv, ls = loss.values, loss.steps
        before = lv[(ls < onset_step) & np.isfinite(lv)][-50:]
        after = lv[ls >= onset_step]
        if after.size and not np.isfinite(after).all():
            loss_rise = float("inf")
        elif before.size and after.size:
            loss_rise = float(np.median(after[: max(5, after.size // 2)]) / max(np.median(before), 1e-12))
        if not (loss_rise >= 1.2):
            return None
    peak = float(x[onset_i:].max())
    baseline = (
        float(np.nanmedian(ref[onset_i]))
        if np.isfinite(ref[onset_i])
        else float(np.median(x[: max(1, onset_i)]))
    )
    tail = x[-max(5, len(x) // 10) :]
    recovered = fin.all() and float(np.median(tail)) < thr * max(baseline, 1e-30) and not broke_after
    if loss is not None and recovered:
        lv = loss.values[np.isfinite(loss.values)]
        recovered = bool(
            np.median(lv[-max(5, len(lv) // 10) :]) <= 1.1 * np.median(lv[: max(5, len(lv) // 10)])
            or loss_rise < 1.2
        )
    n_above = int(above[onset_i:].sum())
    peak_ratio = peak / max(baseline, 1e-30)
    if kind == "spike":
        msg = (
            f"gradient norm rose to {fmt(peak)}, {fmt(peak_ratio)}x its running median {fmt(baseline)} "
            f"(threshold {fmt(thr)}x), on {n_above} steps from step {onset_step}"
        )
    else:
        msg = f"gradient norm grew {fmt(growth)}x over the run (threshold {fmt(thr)}x), from about step {onset_step}"
    if np.isfinite(loss_rise):
        msg += f"; the loss rose {fmt(loss_rise)}x after it"
    elif loss_rise == float("inf"):
        msg += "; the loss turned non-finite after it"
    if broke_after:
        msg += "; gradients became non-finite"
    if recovered:
        msg += "; the run recovered (no lasting damage: a transient burst, so this is a note)"
    remedies = EXPLODING_REMEDIES
    return ctx.finding(
        Severity.INFO if recovered else Severity.ERROR,
        msg,
        {
            "kind": kind,
            "first_step": onset_step,
            "grad_norm_peak": peak,
            "running_median": baseline,
            "ratio": peak_ratio,
            "steps_above": n_above,
            "growth": growth,
            "loss_rise": loss_rise,
            "nonfinite_after": broke_after,
            "recovered": bool(recovered),
        },
        remedies,
        confidence(
            np.log(max(peak_ratio, growth, 1.0) / thr) if peak_ratio > 0 else 0.0,
            min(1.0, n_above / 10 + 0.5),
        )
        * (0.6 if recovered else 1.0),
        step=onset_step,
    )


EARLY_STEPS = 25  # the first updates: before a running median exists
EARLY_LOSS_JUMP = 10.0  # the loss multiplied by this within them is a blow-up, not a noisy start


def _early_blowup(ctx: Context, s: Any, fin: np.ndarray) -> Finding | None:
    """The first updates blew the weights up before a running median could exist: within the first
    EARLY_STEPS logged steps the loss jumped to EARLY_LOSS_JUMP x its first value, with a gradient norm at
    least `explode_ratio` x its median over the second half of the run. An error when the model then never
    learned (the units it killed or saturated stay so); a note when it recovered and learned."""
    loss = ctx.loss
    if loss is None or len(loss) < 2 * EARLY_STEPS or not fin.all():
        return None
    lv, ls = loss.values, loss.steps
    first = float(lv[0])
    early = lv[:EARLY_STEPS]
    if not (math.isfinite(first) and first > 0 and np.isfinite(early).all()):
        return None
    jump_i = int(np.argmax(early))
    jump = float(early[jump_i]) / first
    if jump < EARLY_LOSS_JUMP:
        return None
    x, steps = s.values, s.steps
    blow_step = int(ls[jump_i])
    near = steps <= blow_step + 1
    late = x[steps >= steps[-1] // 2]
    if not near.any() or not late.size:
        return None
    peak = float(x[near].max())
    late_med = float(np.median(late))
    ratio = peak / max(late_med, 1e-30)
    thr = ctx.t.explode_ratio
    if ratio < thr:
        return None
    learned = ctx.learned
    recovered = learned is True or (
        learned is None and float(np.median(lv[-max(5, len(lv) // 10) :])) < 0.5 * first
    )
    msg = (
        f"the first updates blew up: the loss jumped from {fmt(first)} at step {int(ls[0])} to {fmt(float(early[jump_i]))} "
        f"at step {blow_step} ({fmt(jump)}x; threshold {fmt(EARLY_LOSS_JUMP)}x), with a gradient norm of {fmt(peak)}, "
        f"{fmt(ratio)}x its median {fmt(late_med)} over the second half of the run (threshold {fmt(thr)}x)"
    )
    if recovered:
        msg += "; the run recovered and learned (a note)"
    else:
        msg += (
            "; the model never learned afterwards: units killed or saturated by the blown-up weights stay so, "
            "which is what the per-layer statistics after this step show"
        )
    return ctx.finding(
        Severity.INFO if recovered else Severity.ERROR,
        msg,
        {
            "kind": "early",
            "first_step": blow_step,
            "loss_first": first,
            "loss_peak": float(early[jump_i]),
            "loss_jump": jump,
            "threshold_loss_jump": EARLY_LOSS_JUMP,
            "grad_norm_peak": peak,
            "grad_norm_late_median": late_med,
            "ratio": ratio,
            "recovered": bool(recovered),
        },
        EXPLODING_REMEDIES,
        confidence(float(np.log(jump / EARLY_LOSS_JUMP) + np.log(ratio / thr)), 0.8)
        * (0.6 if recovered else 1.0),
        step=blow_step,
    )


def _short_blowup(ctx: Context, s: Any, fin: np.ndarray) -> Finding | None:
    """A run that broke within its first few recorded steps: too short for a running median, but when the
    gradient norm grew by `explode_ratio` / 4 or more from its first values before turning non-finite, the
    explosion is the root cause of the non-finite values."""
    if fin.all() or fin.sum() < 2:
        return None
    x, steps = s.values[fin], s.steps[fin]
    start = float(np.median(x[: max(1, len(x) // 4)]))
    peak = float(x.max())
    growth = peak / start if start > 0 else float("inf")
    thr = ctx.t.explode_ratio
    if not growth >= thr / 4:
        return None
    first_bad = int(s.steps[np.flatnonzero(~fin)[0]])
    onset = int(steps[min(len(x) - 1, max(0, int(np.argmax(x >= start * thr / 4))))])
    msg = (
        f"gradient norm grew {fmt(growth)}x in {first_bad - int(steps[0])} steps ({fmt(start)} → {fmt(peak)}; "
        f"threshold {fmt(thr / 4)}x for a run this short) and turned non-finite at step {first_bad}"
    )
    return ctx.finding(
        Severity.ERROR,
        msg,
        {
            "kind": "growth",
            "first_step": onset,
            "growth": growth,
            "grad_norm_start": start,
            "grad_norm_peak": peak,
            "nonfinite_step": first_bad,
            "nonfinite_after": True,
            "recovered": False,
        },
        EXPLODING_REMEDIES,
        confidence(float(np.log(max(growth, 1.0) / (thr / 4))), min(1.0, len(x) / 10 + 0.3)),
        step=onset,
    )


def _weight_layers(ctx: Context, names: list[str]) -> list[int]:
    """Indices of trainable weight layers (with an init record: Linear/Conv/RNN/Embedding, not norms)."""
    out = []
    for j, n in enumerate(names):
        info = ctx.layer_info.get(n)
        if info is None:
            if not ctx.layer_info:
                out.append(j)
            continue
        if "init" in info and not info.get("norm") and int(info.get("trainable", 1) or 0) > 0:
            out.append(j)
    return out


@check(
    "vanishing_gradient",
    requires=("layer_grad_norm",),
    thresholds=("vanishing_ratio", "vanishing_abs"),
    remedies=("non_saturating_activation", "he_init", "batch_norm", "smaller_model"),
    what="The median gradient norm of the first weight layer divided by that of the last is below "
    "`vanishing_ratio`, or the first layer's median gradient norm is below `vanishing_abs`. With several "
    "models (a GAN) first and last layer are taken within each model.",
    why="Layers near the input barely change, so a deep network behaves like a shallow one and learns "
    "slowly or not at all.",
    evidence="median grad norm per weight layer (first → last), their ratio, the first step it held",
)
def check_vanishing_gradient(ctx: Context) -> Finding | None:
    ls = ctx.layer("grad_norm")
    cols = _weight_layers(ctx, ls.layers)
    models = ctx.r.meta.get("models") or []
    if len(models) <= 1:
        return _vanishing_in(ctx, ls, cols)
    # Several models (a GAN): first and last layer are judged within each model, never across models.
    by_model: dict[str, list[int]] = {}
    for c in cols:
        by_model.setdefault(ls.layers[c].split("/", 1)[0], []).append(c)
    found = [f for group in by_model.values() if (f := _vanishing_in(ctx, ls, group)) is not None]
    return max(found, key=lambda f: f.confidence) if found else None


def _vanishing_in(ctx: Context, ls: Any, cols: list[int]) -> Finding | None:
    if len(cols) < 2:
        return None
    v = ls.values[:, cols].astype(np.float64)
    ok = np.isfinite(v).all(axis=1)
    v, steps = v[ok], ls.steps[ok]
    if len(v) == 0:
        return None
    med = np.median(v, axis=0)
    first, last = float(med[0]), float(med[-1])
    ratio = first / last if last > 0 else float("nan")
    small_ratio = np.isfinite(ratio) and ratio < ctx.t.vanishing_ratio
    tiny_abs = first < ctx.t.vanishing_abs and last > ctx.t.vanishing_abs
    if not (small_ratio or tiny_abs):
        return None
    names = [ls.layers[c] for c in cols]
    with np.errstate(divide="ignore", invalid="ignore"):
        per_step = v[:, 0] / v[:, -1]
    began = first_true(per_step < ctx.t.vanishing_ratio)
    step = int(steps[began]) if began is not None else int(steps[0])
    if small_ratio:
        msg = (
            f"first layer {names[0]} gets {fmt(ratio)}x the gradient of the last layer {names[-1]} "
            f"(median {fmt(first)} vs {fmt(last)}; threshold {fmt(ctx.t.vanishing_ratio)}x)"
        )
        margin = np.log10(ctx.t.vanishing_ratio / max(ratio, 1e-30))
    else:
        msg = f"first layer {names[0]} median gradient norm {fmt(first)} is below {fmt(ctx.t.vanishing_abs)}"
        margin = np.log10(ctx.t.vanishing_abs / max(first, 1e-30))
    kinds = {ctx.layer_info.get(n, {}).get("activation_kind") for n in names}
    remedies = [
        (
            "non_saturating_activation",
            "sigmoid/tanh derivatives (≤ 0.25 / ≤ 1) shrink the gradient at every layer",
        ),
        ("he_init", "keeps the gradient scale constant through ReLU-family layers"),
        ("batch_norm", "re-centres activations so derivatives stay large"),
        ("smaller_model", "fewer layers, fewer multiplications by small factors"),
    ]
    if not kinds & {"sigmoid", "tanh"}:
        remedies = [remedies[1], remedies[0], *remedies[2:]]  # no saturating activation: init first
    return ctx.finding(
        Severity.WARNING,
        msg,
        {
            "first_layer": names[0],
            "last_layer": names[-1],
            "ratio": ratio,
            "first_median": first,
            "last_median": last,
            "median_per_layer": {n: float(m) for n, m in zip(names, med)},
            "samples": int(len(v)),
        },
        remedies,
        confidence(float(margin), min(1.0, len(v) / 10)),
        step=step,
        layer=names[0],
    )
