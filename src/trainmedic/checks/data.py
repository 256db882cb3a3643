"""Data checks judged from a training run: class imbalance and insufficient data."""

from __future__ import annotations

import numpy as np

from ..findings import Finding, Severity
from ._stats import confusion_pattern, fmt, per_class
from .context import Context, confidence
from .registry import check


@check(
    "data_imbalance",
    requires=("class_counts",),
    thresholds=("imbalance_ratio",),
    remedies=("class_weights", "oversample", "undersample", "more_data", "change_loss"),
    what="The largest training class has at least `imbalance_ratio` times the samples of the smallest "
    "(class counts of the training split, else the judged split). The held-out confusion matrix says "
    "whether the minority classes suffer (lower recall, predictions piled into majority columns).",
    why="The loss is dominated by the frequent classes: the model learns to predict them and neglects "
    "the rare ones, which accuracy alone hides.",
    evidence="class counts, largest/smallest ratio, minority vs. majority recall on the held-out split, "
    "the confusion-matrix pattern",
)
def check_data_imbalance(ctx: Context) -> Finding | None:
    split = ctx.train_split or ctx.judged_split
    counts = ctx.class_counts(split)
    if counts is None or len(counts) < 2:
        return None
    present = counts[counts > 0]
    if present.size < 2:
        return None
    ratio = float(present.max() / present.min())
    thr = ctx.t.imbalance_ratio
    if ratio < thr:
        return None
    med = float(np.median(counts))
    minority = [int(i) for i in np.flatnonzero((counts > 0) & (counts <= present.max() / thr))]
    majority = [int(i) for i in np.flatnonzero(counts >= med)]
    ev: dict[str, object] = {
        "split": split,
        "class_counts": counts.tolist(),
        "ratio": ratio,
        "minority_classes": minority,
    }
    msg = f"the largest {split} class has {fmt(ratio)}x the samples of the smallest ({int(present.max())} vs {int(present.min())}; threshold {fmt(thr)}x)"
    hurt = 0.0
    ho = ctx.judged_split
    cm = ctx.r.confusion_matrix(ho) if ho else None
    if cm is not None and cm.shape[0] == len(counts):
        _, recall, support, _ = per_class(cm)
        mino = [i for i in minority if support[i] > 0]
        majo = [i for i in majority if support[i] > 0 and i not in minority]
        if mino and majo:
            r_min, r_maj = float(np.nanmean(recall[mino])), float(np.nanmean(recall[majo]))
            hurt = max(0.0, r_maj - r_min)
            ev.update(minority_recall=r_min, majority_recall=r_maj, heldout_split=ho)
            msg += f"; on {ho}, minority recall {r_min:.0%} vs majority {r_maj:.0%}"
        pat = confusion_pattern(cm)
        ev["confusion"] = pat
        if pat["pattern"] == "piled":
            msg += f", predictions piled into classes {pat['top_predicted_classes']}"
            hurt = max(hurt, 0.2)
    return ctx.finding(
        Severity.WARNING,
        msg,
        ev,
        [
            ("class_weights", "weights each class's errors by its rarity"),
            ("oversample", "shows the rare classes as often as the common ones"),
            ("undersample", "when the majority classes are large enough to spare samples"),
            ("more_data", "collect samples of the rare classes"),
            ("change_loss", "a focal loss down-weights easy majority samples"),
        ],
        confidence(np.log(ratio / thr) + 3 * hurt),
        split=split,
    )


@check(
    "insufficient_data",
    requires=("class_counts", "train_eval", "heldout_eval", "model_summary"),
    thresholds=("min_samples_per_class", "max_params_per_sample", "overfit_gap"),
    remedies=("more_data", "data_augmentation", "transfer_learning", "smaller_model", "weight_decay"),
    what="The median class has fewer than `min_samples_per_class` training samples, or the model has more "
    "than `max_params_per_sample` trainable parameters per training sample, and training accuracy ends "
    "at least `overfit_gap` above held-out accuracy (the shortage shows).",
    why="With too few samples for its size, a model can memorize its training set instead of learning the "
    "pattern; no training trick replaces data.",
    evidence="training samples (median per class, total), trainable parameters, parameters per sample, "
    "train/held-out accuracy gap",
)
def check_insufficient_data(ctx: Context) -> Finding | None:
    tr, ho = ctx.train_split, ctx.heldout_split
    assert tr is not None and ho is not None
    counts = ctx.class_counts(tr)
    if counts is None or counts.sum() == 0:
        return None
    t = ctx.t
    n = int(counts.sum())
    med = float(np.median(counts))
    params = ctx.total_params
    pps = params / n if n else float("inf")
    a_tr = ctx.eval(tr, "accuracy").values
    a_ho = ctx.eval(ho, "accuracy").values
    gap = float(np.nanmean(a_tr[-2:]) - np.nanmean(a_ho[-2:])) if len(a_tr) and len(a_ho) else float("nan")
    few = med < t.min_samples_per_class
    big = pps > t.max_params_per_sample
    if not ((few or big) and gap >= t.overfit_gap):
        return None
    why = []
    if few:
        why.append(
            f"the median class has {fmt(med)} training samples (threshold {fmt(t.min_samples_per_class)})"
        )
    if big:
        why.append(
            f"{params} parameters for {n} samples = {fmt(pps)} per sample (threshold {fmt(t.max_params_per_sample)})"
        )
    msg = (
        " and ".join(why)
        + f"; train accuracy is {gap:.1%} above {ho} accuracy (threshold {t.overfit_gap:.0%})"
    )
    margin = max(
        (t.min_samples_per_class / max(med, 1.0) - 1.0) if few else 0.0,
        np.log10(pps / t.max_params_per_sample) if big else 0.0,
    )
    return ctx.finding(
        Severity.WARNING,
        msg,
        {
            "train_samples": n,
            "median_per_class": med,
            "class_counts": counts.tolist(),
            "trainable_params": params,
            "params_per_sample": pps,
            "accuracy_gap": gap,
            "split": ho,
        },
        [
            ("more_data", "the only complete cure"),
            ("data_augmentation", "label-preserving variations multiply the effective sample count"),
            ("transfer_learning", "start from features learned on more data"),
            ("smaller_model", "fewer parameters to fit with the samples there are"),
            ("weight_decay", "restrains a model that has too much freedom"),
        ],
        confidence(margin + gap / t.overfit_gap - 1.0),
        split=tr,
    )
