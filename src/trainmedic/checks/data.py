"""Data checks judged from a training run: class imbalance and insufficient data."""

from __future__ import annotations

import numpy as np

from ..findings import Finding, Severity
from ._stats import confusion_pattern, fmt, per_class
from .context import Context, confidence
from .registry import check

# Run-config keys (``tm.watch(config=...)``) that make the training compensate for imbalanced classes.
COMPENSATING_KEYS = ("class_weights", "sampler", "balanced_sampler", "oversample", "undersample")


def _compensation(config: object) -> list[str]:
    """The config keys by which the training compensates for class imbalance (``sampler: none`` does not)."""
    if not isinstance(config, dict):
        return []
    out = []
    for k in COMPENSATING_KEYS:
        v = config.get(k)
        if v is None or v is False or (isinstance(v, str) and v.lower() in ("none", "", "off", "false")):
            continue
        out.append(f"{k}={v}" if isinstance(v, str) else k)
    return out


# minority recall (mean over the minority classes, held-out split) below which a majority-biased model's
# minority classes count as harmed by the imbalance
IMBALANCE_HARM_RECALL = 0.7


@check(
    "data_imbalance",
    requires=("class_counts",),
    thresholds=("imbalance_ratio", "min_recall"),
    remedies=("class_weights", "oversample", "undersample", "more_data", "change_loss"),
    what="The largest training class has at least `imbalance_ratio` times the samples of the smallest "
    "(class counts of the training split, else the judged split), also at the one-sided 95% lower bound of the count ratio under Poisson sampling noise (so 9 vs 2 samples in a small training set is not imbalance). It is a warning only when the imbalance shows harm: minority recall on the held-out split at least 20 points (or 10 points with a minority recall below 70%) and 1.64 standard errors (from the minority support) below majority recall, while the model predicts the minority classes fewer times than they occur (by 1.64 sqrt(count): biased toward the majority), predictions piled into few classes, or a low-recall/precision/accuracy finding it explains; otherwise `info`. A class present in the held-out split (3 or more samples) but absent from training is always a warning. The held-out confusion matrix says "
    "whether the minority classes suffer (lower recall, predictions piled into majority columns). When the "
    "training compensates (class weights or a balanced sampler in the run's config) and the minority "
    "classes' mean held-out recall is at least `min_recall` (predictions not piled into a few classes), "
    "the finding is `info`: the data fact stays visible, but it is no longer a training problem.",
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
    absent = _absent_in_training(ctx, split, counts)
    if absent is not None:
        return absent
    if present.size < 2:
        return None
    ratio = float(present.max() / present.min())
    thr = ctx.t.imbalance_ratio
    if ratio < thr:
        return None
    # sampling noise: class counts are Poisson-like, so log(max/min) has standard error
    # sqrt(1/max + 1/min); small training sets of a balanced source often show 9 vs 2 by chance
    se_log = float(np.sqrt(1.0 / present.max() + 1.0 / present.min()))
    ratio_low = float(np.exp(np.log(ratio) - 1.64 * se_log))
    if ratio_low < thr:
        return None
    med = float(np.median(counts))
    minority = [int(i) for i in np.flatnonzero((counts > 0) & (counts <= present.max() / thr))]
    majority = [int(i) for i in np.flatnonzero(counts >= med)]
    ev: dict[str, object] = {
        "split": split,
        "class_counts": counts.tolist(),
        "ratio": ratio,
        "minority_classes": minority,
        "ratio_lower_bound": ratio_low,
        "noise": "one-sided 95% lower bound of the count ratio (Poisson counts)",
    }
    msg = f"the largest {split} class has {fmt(ratio)}x the samples of the smallest ({int(present.max())} vs {int(present.min())}; threshold {fmt(thr)}x)"
    hurt = 0.0
    harmed = False
    r_min = r_maj = float("nan")
    piled = False
    ho = ctx.judged_split
    cm = ctx.confusion_matrix(ho) if ho else None
    if cm is not None and cm.shape[0] == len(counts):
        _, recall, support, predicted = per_class(cm)
        mino = [i for i in minority if support[i] > 0]
        majo = [i for i in majority if support[i] > 0 and i not in minority]
        if mino and majo:
            r_min, r_maj = float(np.nanmean(recall[mino])), float(np.nanmean(recall[majo]))
            hurt = max(0.0, r_maj - r_min)
            # sampling noise of the minority recall: its standard error from the minority support
            n_min = float(np.sum(support[mino]))
            se = float(np.sqrt(max(r_min * (1 - r_min), 0.25 / max(n_min, 1.0)) / max(n_min, 1.0)))
            ev["minority_recall_se"] = se
            # the imbalance is to blame only when the model is biased toward the majority: it predicts the
            # minority classes fewer times than they occur, beyond Poisson noise of that count (a model that
            # compensates — class weights, a balanced sampler — predicts them as often or more; then a lower
            # minority recall says the minority is harder, not that it is rare)
            pred_min = float(np.sum(predicted[mino]))
            biased = n_min - pred_min >= max(1.0, 1.64 * np.sqrt(n_min))
            ev.update(minority_predicted=pred_min, minority_support=n_min, biased_to_majority=bool(biased))
            # and the minority must be served badly, not merely a little worse: a minority recalled at 73%
            # beside a majority at 87% (a class-weighted loss on 19:1 data) is a trade-off, not harm; a gap
            # of 20 points or more is harm at any level
            harmed = (
                biased
                and hurt >= 1.64 * se
                and (hurt >= 0.2 or (hurt >= 0.1 and r_min < IMBALANCE_HARM_RECALL))
            )
            ev.update(minority_recall=r_min, majority_recall=r_maj, heldout_split=ho)
            msg += f"; on {ho}, minority recall {r_min:.0%} vs majority {r_maj:.0%}"
            msg += f", minority classes predicted {int(pred_min)} times for {int(n_min)} samples" + (
                " (biased toward the majority)" if biased else ""
            )
        pat = confusion_pattern(cm)
        ev["confusion"] = pat
        if pat["pattern"] == "piled":
            msg += f", predictions piled into classes {pat['top_predicted_classes']}"
            hurt = max(hurt, 0.2)
            piled = True
            harmed = True
    compensated_by = _compensation(ctx.r.meta.get("config"))
    ev["compensated_by"] = compensated_by
    min_rec = ctx.t.min_recall
    # the same comparison decides the severity and writes the sentence
    compensated = bool(compensated_by) and np.isfinite(r_min) and r_min >= min_rec and not piled
    if compensated:
        msg = (
            f"imbalanced data, compensated ({', '.join(compensated_by)}): {msg}; minority recall "
            f"{r_min:.0%} ≥ {min_rec:.0%}"
        )
    elif compensated_by:
        msg += f" despite {', '.join(compensated_by)}"
    if harmed and not compensated:
        # the imbalance's own harm: minority classes measurably worse than majority ones (beyond the
        # minority recall's sampling noise), or predictions piled into a few classes
        ev["harm"] = (
            "minority classes recalled worse than majority classes" if not piled else "predictions piled"
        )
    return ctx.finding(
        Severity.INFO if compensated else Severity.WARNING,
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


def _absent_in_training(ctx: Context, split: str | None, counts: np.ndarray) -> Finding | None:
    """Classes that occur in the held-out split but not at all in training: the extreme imbalance (the model
    cannot learn them), harm by construction."""
    ho = ctx.heldout_split
    if split is None or ho is None or split == ho:
        return None
    c_ho = ctx.class_counts(ho)
    if c_ho is None:
        return None
    k = max(len(counts), len(c_ho))
    tr_c = np.pad(counts, (0, k - len(counts)))
    ho_c = np.pad(c_ho, (0, k - len(c_ho)))
    missing = [int(i) for i in np.flatnonzero((tr_c == 0) & (ho_c >= 3))]
    if not missing:
        return None
    msg = (
        f"{len(missing)} class(es) occur in {ho} but never in {split}: "
        + ", ".join(f"class {i} ({int(ho_c[i])} {ho} samples)" for i in missing[:5])
        + "; the model cannot learn a class it never sees"
    )
    return ctx.finding(
        Severity.WARNING,
        msg,
        {
            "split": split,
            "class_counts": tr_c.tolist(),
            "heldout_class_counts": ho_c.tolist(),
            "absent_classes": missing,
            "harm": "classes absent from training",
        },
        [
            ("more_data", "collect training samples of the missing classes"),
            ("oversample", "if a few exist elsewhere in the data, make sure the split keeps them"),
            ("class_weights", "once the classes are present, weight their errors up"),
        ],
        confidence(2.0),
        split=split,
    )


@check(
    "insufficient_data",
    requires=("class_counts", "train_eval", "heldout_eval", "model_summary"),
    thresholds=(
        "min_samples_per_class",
        "max_params_per_sample",
        "overfit_gap",
        "overfit_val_loss_rise",
        "min_accuracy",
    ),
    remedies=("more_data", "data_augmentation", "transfer_learning", "smaller_model", "weight_decay"),
    what="The median class has fewer than `min_samples_per_class` training samples, or the model has more "
    "than `max_params_per_sample` trainable parameters per training sample, and training accuracy ends "
    "at least `overfit_gap` above held-out accuracy (the shortage shows). It is `info` (a data property, "
    "not a training problem) when the run ended on its best held-out epoch's weights (restored; the held-out loss is not `overfit_val_loss_rise` "
    "above its best there) and held-out accuracy is at least `min_accuracy`.",
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
    from .fit import heldout_loss_rise

    rise_hit, rise, _, _, _ = heldout_loss_rise(ctx)
    acc_ho = float(np.nanmean(a_ho[-2:])) if len(a_ho) else float("nan")
    settled = not rise_hit and ctx.restored_epoch is not None
    data_only = settled and acc_ho >= t.min_accuracy
    if data_only:
        msg += (
            f"; the training is not overfitting any more ({ho} loss "
            + (
                "restored at its best epoch"
                if ctx.restored_epoch is not None
                else f"{rise:.0%} above its best"
            )
            + f") and {ho} accuracy is {acc_ho:.1%} ≥ {t.min_accuracy:.0%}: the gap is the data's limit"
        )
    margin = max(
        (t.min_samples_per_class / max(med, 1.0) - 1.0) if few else 0.0,
        np.log10(pps / t.max_params_per_sample) if big else 0.0,
    )
    return ctx.finding(
        Severity.INFO if data_only else Severity.WARNING,
        msg,
        {
            "train_samples": n,
            "heldout_loss_rise": rise,
            "restored_epoch": ctx.restored_epoch,
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
