"""Performance checks on the held-out split: low accuracy, low precision, low recall (per class).

All three are judged on the held-out split (val, else test, else train) at its best epoch (lowest loss,
else highest accuracy) *and* at its last epoch: a problem must hold at both, so one bad epoch at the end of
a good run, or one good epoch in a bad run, does not decide the verdict.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..findings import Finding, Severity
from ._stats import confusion_pattern, per_class
from .context import Context, confidence
from .registry import check


def _class_names(ctx: Context, split: str, c: int) -> list[str]:
    recs = ctx.r.records("classification", split)
    names = recs[-1]["data"].get("class_names") if recs else None
    return (
        [str(n) for n in names] if isinstance(names, list) and len(names) == c else [str(i) for i in range(c)]
    )


def _cms(ctx: Context) -> tuple[str, int, int, np.ndarray, np.ndarray] | None:
    sp = ctx.judged_split
    if sp is None:
        return None
    best, last = ctx.best_and_last_epoch(sp)
    cm_b, cm_l = ctx.confusion_matrix(sp, best), ctx.confusion_matrix(sp, last)
    if cm_b is None or cm_l is None:
        return None
    return sp, best, last, cm_b, cm_l


def _remedies_for_classes(ctx: Context, weak_minority: bool) -> list[tuple[str, str]]:
    out = []
    if weak_minority:
        out += [
            ("class_weights", "the weak classes are rare in training; weight their errors up"),
            ("oversample", "show the rare classes more often"),
        ]
    out += [
        ("more_data", "more samples of the weak classes"),
        ("fix_labels", "systematic confusions often come from mislabelled samples"),
        ("change_loss", "a focal loss concentrates on hard classes"),
    ]
    if not weak_minority:
        out += [("class_weights", "trade precision and recall between classes")]
    return out


def _minority(ctx: Context, classes: list[int]) -> bool:
    counts = ctx.class_counts(ctx.train_split or ctx.judged_split)
    if counts is None or len(counts) == 0:
        return False
    med = float(np.median(counts))
    return any(c < len(counts) and counts[c] < med / 2 for c in classes)


@check(
    "low_accuracy",
    requires=("heldout_eval",),
    thresholds=("min_accuracy",),
    remedies=("larger_model", "train_longer", "more_data", "transfer_learning", "data_augmentation"),
    what="Accuracy of the held-out split (val, else test, else train) of the model the run returned (the "
    "better of its last epoch and the mean of its last two) is below `min_accuracy`, also after adding half a "
    "standard error of an accuracy at the split's size. A good earlier epoch is named in the message (the "
    "model lost it) but does not clear the final one.",
    why="The model is not good enough for use, whatever the cause; the other findings usually say why.",
    evidence="accuracy at the best and last epoch, the split, the confusion-matrix pattern",
)
def check_low_accuracy(ctx: Context) -> Finding | None:
    sp = ctx.judged_split
    if sp is None:
        return None
    best, last = ctx.best_and_last_epoch(sp)
    a_best, a_last = ctx.value_at(sp, "accuracy", best), ctx.value_at(sp, "accuracy", last)
    thr = ctx.t.min_accuracy
    # the model the run returned is judged (its last epoch, or the restored one): a good earlier epoch does
    # not make a bad final model good; the better of the last epoch and the mean of the last two keeps one
    # unlucky final evaluation of a small split from deciding alone
    acc = ctx.finite_eval(sp, "accuracy")
    judged = max(a_last, float(acc[-2:].mean())) if acc.size else a_last
    se = ctx.accuracy_se(judged, sp)
    if not (np.isfinite(a_last) and judged + NOISE_Z * np.nan_to_num(se, nan=0.0) < thr):
        return None
    worst_case = judged
    cm = ctx.confusion_matrix(sp, last)
    pattern = confusion_pattern(cm) if cm is not None else {"pattern": "unknown"}
    by_loss = len(ctx.eval(sp, "loss")) and np.isfinite(ctx.eval(sp, "loss").values).any()
    best_name = "the lowest-loss epoch" if by_loss else "the best epoch"
    msg = f"{sp} accuracy {a_last:.1%} at the last epoch ({last}), {a_best:.1%} at {best_name} ({best}); below {thr:.0%}"
    if np.isfinite(a_best) and a_best >= thr:
        msg += f" (it reached {a_best:.1%} at epoch {best} and lost it: the final model is what counts)"
    if cm is not None:
        msg += f"; predictions are {pattern['pattern']}"
    counts = ctx.class_counts(ctx.train_split or sp)
    imbalanced = (
        counts is not None
        and len(counts) > 1
        and float(np.max(counts)) >= ctx.t.imbalance_ratio * max(float(np.min(counts)), 1.0)
    )
    # Predictions piled into a few classes point at imbalance only when the training classes are imbalanced;
    # on balanced data the model simply has not learned (the root-cause findings say why).
    remedies = (
        [
            ("class_weights", "predictions pile into the classes that dominate training"),
            ("oversample", "balance what the model sees"),
        ]
        if pattern.get("pattern") == "piled" and imbalanced
        else []
    )
    remedies += [
        ("train_longer", "if the training loss is still falling"),
        ("larger_model", "if the model cannot fit the training data"),
        ("more_data", "if it fits training data but not held-out data"),
        ("data_augmentation", "more varied training samples"),
        ("transfer_learning", "start from a model trained on related data"),
    ]
    return ctx.finding(
        Severity.ERROR if worst_case < thr / 2 else Severity.WARNING,
        msg,
        {
            "split": sp,
            "accuracy_last": a_last,
            "accuracy_best": a_best,
            "best_epoch": best,
            "last_epoch": last,
            "confusion": pattern,
        },
        remedies,
        confidence((thr - worst_case) / 0.15, min(1.0, len(ctx.eval(sp, "accuracy")) / 3)),
        epoch=last,
        split=sp,
    )


# low precision of a rare class (at most RARE_PREVALENCE of the split, and `imbalance_ratio` times smaller than the
# largest class) recalled at RARE_TRADEOFF_RECALL or more and over-predicted is the base-rate cost of favouring
# recall, not a failure
RARE_PREVALENCE = 0.1
RARE_TRADEOFF_RECALL = 0.7

NOISE_Z = 0.5  # a rate counts as below its threshold when rate + half a standard error still is


def _below_beyond_noise(rate: np.ndarray, n: np.ndarray, thr: float, inclusive: bool) -> np.ndarray:
    """Per class: the rate stays below (or at) ``thr`` after adding NOISE_Z binomial standard errors from its
    count ``n`` (never below one sample's resolution) — a class of 4 samples at 40% is not judged low."""
    n = np.maximum(np.asarray(n, dtype=np.float64), 1.0)
    r = np.nan_to_num(np.asarray(rate, dtype=np.float64), nan=1.0)
    se = np.sqrt(np.maximum(r * (1 - r), 1.0 / n) / n)
    upper = r + NOISE_Z * se
    return upper <= thr if inclusive else upper < thr


def _per_class_check(ctx: Context, which: str) -> Finding | None:
    got = _cms(ctx)
    if got is None:
        return None
    sp, best, last, cm_b, cm_l = got
    p_b, r_b, s_b, pred_b = per_class(cm_b)
    p_l, r_l, s_l, pred_l = per_class(cm_l)
    c = cm_l.shape[0]
    names = _class_names(ctx, sp, c)
    if which == "precision":
        thr = ctx.t.max_low_precision
        # a class never predicted has no precision (its problem is recall); ignore tiny prediction counts
        bad = np.isfinite(p_b) & np.isfinite(p_l) & (p_b <= thr) & (p_l <= thr) & (pred_l >= 3)
        bad &= _below_beyond_noise(p_l, pred_l, thr, inclusive=True)
        vals, other = p_l, r_l
    else:
        thr = ctx.t.min_recall
        bad = np.isfinite(r_b) & np.isfinite(r_l) & (r_b < thr) & (r_l < thr) & (s_l >= 3)
        bad &= _below_beyond_noise(r_l, s_l, thr, inclusive=False)
        vals, other = r_l, p_l
    idx = [int(i) for i in np.flatnonzero(bad)]
    if not idx:
        return None
    idx.sort(key=lambda i: vals[i])
    details: list[dict[str, Any]] = []
    for i in idx:
        col, row = cm_l[:, i].copy(), cm_l[i, :].copy()
        col[i] = row[i] = 0
        d: dict[str, Any] = {
            "class": names[i],
            "index": i,
            which: float(vals[i]),
            f"{which}_best_epoch": float((p_b if which == "precision" else r_b)[i]),
            "recall" if which == "precision" else "precision": None
            if not np.isfinite(other[i])
            else float(other[i]),
            "support": int(s_l[i]),
            "predicted": int(pred_l[i]),
        }
        if which == "precision":
            d["false_positives_from"] = {names[j]: int(col[j]) for j in np.argsort(-col)[:3] if col[j] > 0}
        else:
            d["mistaken_for"] = {names[j]: int(row[j]) for j in np.argsort(-row)[:3] if row[j] > 0}
        details.append(d)
    op = "≤" if which == "precision" else "<"
    listed = ", ".join(f"class {d['class']} {d[which]:.0%}" for d in details[:5])
    more = f" and {len(details) - 5} more" if len(details) > 5 else ""
    msg = f"{which} {op} {thr:.0%} on {sp} for {len(idx)} of {c} classes: {listed}{more}"
    first = details[0]
    if which == "precision" and first["false_positives_from"]:
        src = ", ".join(f"{k} ({v})" for k, v in first["false_positives_from"].items())
        msg += f"; class {first['class']} absorbs samples of {src}"
    if which == "recall" and first["mistaken_for"]:
        dst = ", ".join(f"{k} ({v})" for k, v in first["mistaken_for"].items())
        msg += f"; class {first['class']} is mistaken for {dst}"
    pattern = confusion_pattern(cm_l)
    margin = max((thr - float(vals[i])) / max(thr, 1e-9) for i in idx) * 2
    support = float(np.mean([s_l[i] for i in idx]))
    severity = Severity.WARNING
    total = float(s_l.sum())
    if (
        which == "precision"
        and total > 0
        and all(
            np.isfinite(r_l[i])
            and r_l[i] >= RARE_TRADEOFF_RECALL
            and pred_l[i] > s_l[i]
            and s_l[i] / total <= RARE_PREVALENCE
            and s_l[i] * ctx.t.imbalance_ratio <= s_l.max()
            for i in idx
        )
    ):
        # a rare class caught at a high recall and predicted more often than it occurs: at a prevalence of a
        # few percent even a small false-positive rate outnumbers the true positives. That is the trade-off a
        # recall-favouring loss (class weights, a balanced sampler) chooses, as screening tasks do: a note
        severity = Severity.INFO
        msg += (
            "; each such class is rare (at most "
            f"{RARE_PREVALENCE:.0%} of {sp}, {ctx.t.imbalance_ratio:g}x smaller than the largest), recalled at {RARE_TRADEOFF_RECALL:.0%} or more and predicted more often "
            "than it occurs: the precision a recall-favouring trade-off gives at that prevalence, a note"
        )
    return ctx.finding(
        severity,
        msg,
        {"split": sp, "best_epoch": best, "last_epoch": last, "classes": details, "confusion": pattern},
        _remedies_for_classes(ctx, _minority(ctx, idx)),
        confidence(margin, min(1.0, support / 20)),
        epoch=last,
        split=sp,
    )


@check(
    "low_precision",
    requires=("heldout_eval", "confusion_matrix"),
    thresholds=("max_low_precision", "imbalance_ratio"),
    remedies=("class_weights", "more_data", "fix_labels", "change_loss"),
    what="Per class, on the held-out split: precision (true positives / predicted) is at or below "
    "`max_low_precision` at both the best and the last epoch, also after adding half a binomial standard error "
    "from the class's prediction count. Classes predicted fewer than 3 times are not "
    "judged (their precision is noise; a class never predicted is a recall problem). When every such class is "
    "rare (at most 10% of the split and `imbalance_ratio` times smaller than the largest class), recalled at 70% or more and predicted more often than it occurs, the "
    "finding is an `info` note: the precision a recall-favouring trade-off (class weights, screening) gives at "
    "that prevalence.",
    why="Many of the samples the model assigns to that class belong elsewhere: acting on its predictions "
    "means acting on false alarms.",
    evidence="per-class precision (best and last epoch), which true classes its false positives come from, "
    "the confusion-matrix pattern",
)
def check_low_precision(ctx: Context) -> Finding | None:
    return _per_class_check(ctx, "precision")


@check(
    "low_recall",
    requires=("heldout_eval", "confusion_matrix"),
    thresholds=("min_recall",),
    remedies=("class_weights", "oversample", "more_data", "fix_labels", "change_loss"),
    what="Per class, on the held-out split: recall (true positives / actual) is below `min_recall` at both "
    "the best and the last epoch, also after adding half a binomial standard error from the class's support "
    "(classes with fewer than 3 held-out samples are not judged). A minority "
    "class with good recall is not flagged.",
    why="The model misses most samples of that class: for a rare but important class that is the costly "
    "error.",
    evidence="per-class recall (best and last epoch), support, what the class is mistaken for, the "
    "confusion-matrix pattern",
)
def check_low_recall(ctx: Context) -> Finding | None:
    return _per_class_check(ctx, "recall")
