"""Fit checks: overfitting, underfitting, train/test mismatch, inefficient learning (stalled, slow, oscillating)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..findings import Finding, Severity
from ._stats import confusion_pattern, fmt, window_means
from .context import SCALE_MISMATCH, Context, confidence
from .registry import check

_METRIC_NAME = {"accuracy": "accuracy", "recall_macro": "balanced accuracy"}


def _last_mean(v: np.ndarray, k: int = 2) -> float:
    v = v[np.isfinite(v)]
    return float(v[-k:].mean()) if v.size else float("nan")


def _no_transfer(ctx: Context) -> dict[str, Any] | None:
    """The model learned its training split and the held-out split ends at chance (or below): what was
    learned does not carry over. Overfitting costs part of the held-out score and leaves it above chance;
    here the splits differ — preprocessing applied to one split only,
    another distribution, batch-norm statistics that never update, an augmentation that changes what an
    input looks like, training labels detached from their inputs. Train-mode running metrics count for the
    training side (they lag a learning model, never lead it). Judged against the held-out split's noise:
    chance + max(5 points, 3 standard errors of an accuracy at chance with the split's size)."""
    tr, ho = ctx.train_split, ctx.heldout_split
    if tr is None or ho is None or ctx.diverged:
        return None
    metric = (
        "recall_macro"
        if len(ctx.eval(tr, "recall_macro")) and len(ctx.eval(ho, "recall_macro"))
        else "accuracy"
    )
    a_tr, a_ho = ctx.finite_eval(tr, metric), ctx.finite_eval(ho, metric)
    counts = ctx.class_counts(ho)
    if len(a_tr) < 2 or len(a_ho) < 3 or counts is None or len(counts) < 2 or counts.sum() == 0:
        return None
    k = int((counts > 0).sum()) if metric == "recall_macro" else len(counts)
    chance = 1.0 / max(k, 2) if metric == "recall_macro" else float(counts.max() / counts.sum())
    acc_tr = _last_mean(a_tr)
    if not acc_tr >= max(ctx.t.underfit_train_accuracy, chance + 0.5 * (1.0 - chance)):
        return None
    n = int(counts.sum())
    margin = max(0.05, 3.0 * math.sqrt(chance * (1.0 - chance) / n))
    best_ho, last_ho = float(a_ho.max()), _last_mean(a_ho)
    # judged at the end only: overfitting leaves the held-out score above chance, while ending at (or below)
    # chance, even after a better first epoch, means the splits drifted apart as the model fitted the
    # training split's own features (the best epoch is kept as evidence)
    if not last_ho <= chance + margin:
        return None
    return {
        "metric": metric,
        "train": acc_tr,
        "heldout_last": last_ho,
        "heldout_best": best_ho,
        "chance": chance,
        "margin": margin,
        "split": ho,
        "train_split": tr,
    }


# a train/held-out gap this many times `overfit_gap` is overfitting by itself; below it a gap needs harm
GAP_ALONE_HARM = 2.0


def heldout_loss_rise(ctx: Context) -> tuple[bool, float, int | None, float, float]:
    """Held-out loss at the judged end vs. its best epoch: (rise counts as overfitting, relative rise, best
    epoch, best loss, training-loss drop since the best epoch). The rise is NaN when it cannot be judged."""
    tr, ho = ctx.train_split, ctx.heldout_split
    rise_hit, rise, best_epoch, best_loss, train_drop = False, float("nan"), None, float("nan"), float("nan")
    if tr is None or ho is None:
        return rise_hit, rise, best_epoch, best_loss, train_drop
    vl, tl = ctx.eval(ho, "loss"), ctx.eval(tr, "loss")
    if len(vl) >= 3 and np.isfinite(vl.values).all():
        b = int(np.argmin(vl.values))
        best_epoch, best_loss = int(vl.steps[b]), float(vl.values[b])
        rise = float(vl.values[-1] / best_loss - 1.0) if best_loss > 0 else float("nan")
        if len(tl) == len(vl) and np.isfinite(tl.values).all():
            train_drop = float(tl.values[b] - tl.values[-1])
        elif ctx.loss is not None:
            train_drop = 0.0
        noise = loss_noise(ctx, ho, max(best_loss, float(vl.values[-1])))
        delta = float(vl.values[-1] - best_loss)
        rise_hit = (
            b <= len(vl) - 3
            and rise >= ctx.t.overfit_val_loss_rise
            and train_drop > 0
            and not (delta < 1.5 * noise)
        )
    return rise_hit, rise, best_epoch, best_loss, train_drop


def loss_noise(ctx: Context, split: str, level: float) -> float:
    """What the mean loss of ``split`` moves by noise alone: the larger of its standard error (per-sample
    losses of a classifier spread about twice their mean) and the move of one confidently wrong sample
    (2 ln C / n). NaN when the split size is unknown."""
    n = ctx.n_samples(split)
    if n <= 0 or not math.isfinite(level):
        return float("nan")
    c = max(ctx.n_classes, 2)
    return max(2.0 * abs(level) / math.sqrt(n), 2.0 * math.log(c) / n)


@check(
    "overfitting",
    requires=("train_eval", "heldout_eval"),
    thresholds=("overfit_val_loss_rise", "overfit_gap", "underfit_train_accuracy", "min_samples_per_class"),
    remedies=(
        "early_stopping",
        "restore_best_checkpoint",
        "add_dropout",
        "weight_decay",
        "data_augmentation",
        "more_data",
        "smaller_model",
    ),
    what="Held-out loss ends at least `overfit_val_loss_rise` (relative) above its best epoch while the "
    "training loss kept falling, or training balanced accuracy (macro recall; accuracy when not recorded; "
    "≥ `underfit_train_accuracy`) ends at least `overfit_gap` above the held-out one (mean of the last two "
    "epochs), beyond the splits' noise. A held-out loss rise alone is a warning only when the held-out "
    "accuracy also fell since the best-loss epoch by max(1 point, 2 standard errors of a difference) or "
    "the train/held-out gap is at least max(`overfit_gap`/2, 2 standard errors); otherwise it is an `info` "
    "note (over-confidence). A gap without such a rise (or with no held-out loss recorded) is a warning only "
    "when the held-out score fell from its best epoch by max(2 points, 2 standard errors of a difference), "
    "the training set is small (median class below `min_samples_per_class`) or the gap is at least 2x "
    "`overfit_gap`; otherwise an `info` note (every model fits its training data "
    "better than held-out data). Balanced accuracy keeps a class-prior shift between the splits from looking like overfitting. "
    "When the run put back its best weights (early stopping / restore), the restored epoch is what is "
    "judged; a gap alone at that epoch, on a training set whose median class has fewer than "
    "`min_samples_per_class` samples, is left to `insufficient_data` (the training did what it can).",
    why="The model memorizes the training samples instead of the pattern: held-out performance gets "
    "worse the longer it trains, and the final weights are worse than an earlier epoch's.",
    evidence="best held-out epoch and loss, rise since, train loss change since, train/held-out accuracy gap",
)
def check_overfitting(ctx: Context) -> Finding | None:
    tr, ho = ctx.train_split, ctx.heldout_split
    assert tr is not None and ho is not None
    t = ctx.t
    # balanced accuracy (macro recall) when recorded: a class-prior shift between the splits is not overfitting
    metric = (
        "recall_macro"
        if len(ctx.eval(tr, "recall_macro")) and len(ctx.eval(ho, "recall_macro"))
        else "accuracy"
    )
    acc_tr = _last_mean(ctx.eval(tr, metric).values)
    acc_ho = _last_mean(ctx.eval(ho, metric).values)
    gap = acc_tr - acc_ho
    # the gap must stand out of the splits' sampling noise (standard error of the difference)
    se_gap = ctx.gap_se(acc_tr, tr, acc_ho, ho)
    gap_hit = acc_tr >= t.underfit_train_accuracy and gap >= t.overfit_gap and gap >= 2.0 * se_gap
    rise_hit, rise, best_epoch, best_loss, train_drop = heldout_loss_rise(ctx)
    n_train = ctx.class_counts(tr)
    small = n_train is not None and float(np.median(n_train)) < t.min_samples_per_class
    if gap_hit and not rise_hit and small and ctx.restored_epoch is not None:
        # the run already ends on its best held-out epoch's weights: the remaining gap is what a small
        # training set allows — `insufficient_data` reports it, with the same gap
        return None
    if not (gap_hit or rise_hit):
        return None
    if _no_transfer(ctx) is not None or ctx.output_scale_mismatch is not None:
        # the held-out split ends at chance: the splits differ (`train_test_mismatch` reports it);
        # regularization would not help a model whose learning does not carry over at all
        return None
    overconfident = False
    gap_only_note = None
    if gap_hit and not rise_hit and not small and gap < GAP_ALONE_HARM * t.overfit_gap:
        # harm, not suspicion: every model fits its training data better than held-out data; without a held-out
        # loss that rose, a gap is overfitting when the held-out score suffers — it fell from its best epoch by
        # max(2 points, 2 standard errors of a difference) —, when the training set is small (the gap is what
        # too little data costs: more data would close it), or when it is GAP_ALONE_HARM x the threshold
        ho_acc = ctx.finite_eval(ho, metric)
        se_fall = math.sqrt(2.0) * float(np.nan_to_num(ctx.accuracy_se(acc_ho, ho), nan=0.0))
        fall = float(ho_acc.max() - ho_acc[-1]) if ho_acc.size >= 3 else float("nan")
        if not (math.isfinite(fall) and fall >= max(0.02, 2.0 * se_fall)):
            gap_only_note = (
                f"{ho} {_METRIC_NAME[metric]} held at its best within noise"
                + (
                    f" (it ends {fall:.1%} below its best; noise {max(0.02, 2.0 * se_fall):.1%})"
                    if math.isfinite(fall)
                    else ""
                )
                + f" and the gap is below {GAP_ALONE_HARM:g}x the threshold, so this is a note, not harm"
            )
    if rise_hit and not gap_hit and best_epoch is not None:
        # harm, not suspicion: a held-out loss that rises while held-out accuracy holds is the model growing
        # over-confident on a few samples; it is overfitting when the accuracy suffers beyond its noise
        acc_best = ctx.value_at(ho, metric, best_epoch)
        se_drop = math.sqrt(2.0) * np.nan_to_num(ctx.accuracy_se(acc_ho, ho), nan=0.0)
        overconfident = not (
            math.isfinite(acc_best) and acc_best - acc_ho >= max(0.01, 2.0 * se_drop)
        ) and gap < max(t.overfit_gap / 2, 2.0 * se_gap)
    parts = []
    if rise_hit:
        parts.append(
            f"{ho} loss rose {rise:.0%} above its best ({fmt(best_loss)} at epoch {best_epoch}; threshold "
            f"{t.overfit_val_loss_rise:.0%}) while the training loss kept falling"
        )
    if gap_hit:
        parts.append(
            f"train {_METRIC_NAME[metric]} {acc_tr:.1%} is {gap:.1%} above {ho} {_METRIC_NAME[metric]} {acc_ho:.1%} "
            f"(threshold {t.overfit_gap:.0%})"
        )
    margin = max(
        (rise / t.overfit_val_loss_rise - 1.0) if rise_hit else 0.0,
        (gap / t.overfit_gap - 1.0) if gap_hit else 0.0,
    )
    remedies = []
    if small and not rise_hit and ctx.restored_epoch is None:
        remedies += [
            (
                "early_stopping",
                f"keep the weights of the best {ho} epoch; what gap remains is the data's limit",
            )
        ]
    if rise_hit:
        remedies += [
            ("early_stopping", f"{ho} loss was best at epoch {best_epoch}; stop there"),
            (
                "restore_best_checkpoint",
                f"the weights of epoch {best_epoch} generalize better than the last ones",
            ),
        ]
    if small:
        remedies += [
            ("more_data", "the training set is small"),
            ("data_augmentation", "more varied samples for free"),
        ]
    remedies += [
        ("add_dropout", "makes memorizing single samples harder"),
        ("weight_decay", "keeps weights small, favouring simpler functions"),
    ]
    if not small:
        remedies += [("data_augmentation", "more varied samples for free")]
    remedies += [("smaller_model", "less capacity to memorize")]
    n_ep = len(ctx.eval(ho, "accuracy"))
    if gap_only_note is not None:
        parts.append(gap_only_note)
    if overconfident:
        parts.append(
            f"{ho} {_METRIC_NAME[metric]} did not suffer ({acc_ho:.1%} now), so this is over-confidence on a few "
            "samples, a note rather than harm"
        )
    return ctx.finding(
        Severity.INFO if overconfident or gap_only_note is not None else Severity.WARNING,
        "; ".join(parts),
        {
            "split": ho,
            "best_epoch": best_epoch,
            "best_loss": best_loss,
            "val_loss_rise": rise,
            "train_loss_drop_since_best": train_drop,
            "train_accuracy": acc_tr,
            "heldout_accuracy": acc_ho,
            "accuracy_gap": gap,
            "gap_metric": metric,
            "gap_standard_error": se_gap,
            "noise": "accuracy gap against 2 standard errors of the two splits' sizes; loss rise against "
            "1.5x the held-out loss noise (standard error, one-sample move)",
            "rule": [r for r, hit in (("val_loss_rise", rise_hit), ("accuracy_gap", gap_hit)) if hit],
        },
        remedies,
        confidence(margin + (0.5 if rise_hit and gap_hit else 0.0), min(1.0, n_ep / 5)),
        epoch=best_epoch,
        split=ho,
    )


@check(
    "underfitting",
    requires_any=("train_eval", "heldout_eval"),
    thresholds=("underfit_train_accuracy", "mismatch_gap"),
    remedies=(
        "train_longer",
        "raise_learning_rate",
        "lower_learning_rate",
        "larger_model",
        "switch_optimizer",
        "he_init",
        "batch_norm",
    ),
    what="Training accuracy (mean of the last two epochs, and never above the threshold in any epoch) stays "
    "below `underfit_train_accuracy`; or (*stopped too early*) training ended while the held-out accuracy was "
    "still rising steadily: over the last third of the epochs (at least 2) it gained at least max(3 points, 3 "
    "standard errors of a difference at the split's size), the last epoch alone at least max(1 point, 2 "
    "standard errors), at least 75% of those epochs improved, and the held-out loss kept falling (a note "
    "instead when less than 5 points of error remain: that is all training longer could win); with only two "
    "evaluations, a rise of max(5 points, 4 standard errors of a difference) while the per-step training loss "
    "still falls at the end (a line fitted to the last half of the steps slopes down by more than 3 standard "
    "errors of its slope, and by at least 5% of its level) and at least 5 points of error left. A low "
    "training accuracy at the data's noise floor is an `info` note: the model clearly learned (well above "
    "chance), training and held-out accuracy agree within max(3 points, 2 standard errors), the training "
    "accuracy moved less than max(3 points, 3 standard errors) over the last third of the epochs (at least 6 "
    "epochs), the final training accuracy is still far above chance, the training loss (the training split's, "
    "else the per-step loss: its last tenth, and a line fitted to its last half) is no longer falling and "
    "not above the chance level ln C, no hidden layer is narrower than the number of classes, and the optimizer's effective step "
    "(lr / (1 - momentum); lr for Adam-like optimizers) is inside its usual range (SGD up to 0.5, Adam/AdamW/"
    "RMSprop up to 0.02): a plateau under a far larger step is the optimizer's, not the data's. *Held by weight decay*: a weight decay above its usual range (coupled L2 from 0.05, AdamW's decoupled decay from 1.0) with a training accuracy that plateaued below 90% over the last third of the epochs (at least 4) is underfitting: the penalty, not the data, sets the plateau. *Collapsed*: a model that learned (see `inefficient_learning`) and whose training accuracy ends below the threshold, at least max(20 points, 3 standard errors of a difference) below its best (often at chance), is underfitting whatever its best was (with a loss that fell without bound, the message says the loss is not bounded below for these outputs). Not raised when held-out accuracy is `mismatch_gap` above training "
    "accuracy (that is a mismatch) or when the loss went non-finite (that is nonfinite).",
    why="A model that cannot fit its own training data will not do well anywhere; more regularization "
    "would make it worse.",
    evidence="final and best training accuracy, training loss vs. the chance-level loss ln(C), the loss "
    "trend over the last epochs, the confusion-matrix pattern of the training split",
)
def check_underfitting(ctx: Context) -> Finding | None:
    tr = ctx.train_split
    t = ctx.t
    if tr is None:
        return None if ctx.diverged else _stopped_early(ctx)
    acc = ctx.eval(tr, "accuracy").values
    final, best = _last_mean(acc), float(np.nanmax(acc)) if np.isfinite(acc).any() else float("nan")
    if ctx.diverged:
        return None
    collapse = _collapsed(ctx, tr, final, best)
    held = _held_by_weight_decay(ctx, tr, acc, final)
    if not (best < t.underfit_train_accuracy) and collapse is None and held is None:
        return _stopped_early(ctx)
    ho = ctx.heldout_split
    acc_ho = _last_mean(ctx.eval(ho, "accuracy").values) if ho else float("nan")
    if ho and acc_ho - final >= t.mismatch_gap:
        return None
    cm = ctx.confusion_matrix(tr)
    pattern = confusion_pattern(cm) if cm is not None else {"pattern": "unknown"}
    tl = ctx.eval(tr, "loss").values
    c = cm.shape[0] if cm is not None else 0
    chance = math.log(c) if c > 1 else float("nan")
    still_falling = bool(len(tl) >= 3 and np.isfinite(tl[-3:]).all() and tl[-1] < tl[-3] * 0.97)
    # a floor is where training stopped moving: not while the loss still falls, and not with a loss above the
    # chance level ln C (no calibrated model at its floor scores worse than guessing; a loss that far off
    # means outputs the loss cannot read — e.g. raw scores into BCELoss)
    above_chance_loss = bool(len(tl) and np.isfinite(tl[-1]) and np.isfinite(chance) and tl[-1] > chance)
    if not (len(tl) and np.isfinite(tl[-1])) and ctx.loss is not None and ctx.loss.values.size >= 20:
        # no training-split loss evaluated: the per-step loss tells the same (its last tenth, its trend)
        v = ctx.loss.values[np.isfinite(ctx.loss.values)]
        tail = float(np.median(v[-max(1, len(v) // 10) :])) if v.size else float("nan")
        above_chance_loss = bool(np.isfinite(chance) and np.isfinite(tail) and tail > chance)
        still_falling_steps = _loss_still_falling(ctx)[0]
    else:
        still_falling_steps = False
    floor = (
        None
        if collapse is not None or still_falling or still_falling_steps or above_chance_loss
        else _at_floor(ctx, tr, acc, acc_ho)
    )
    msg = f"training accuracy ends at {final:.1%} (best {best:.1%}), below {t.underfit_train_accuracy:.0%}"
    if held is not None and not best < t.underfit_train_accuracy and collapse is None:
        msg = f"training accuracy is held at {final:.1%} (best {best:.1%}) by the weight decay: {held}"
    if len(tl) and np.isfinite(tl[-1]) and np.isfinite(chance):
        msg += f"; training loss {fmt(float(tl[-1]))} vs. chance level {fmt(chance)}"
    msg += f"; predictions are {pattern['pattern']}"
    if still_falling:
        msg += "; the loss is still falling"
    if collapse is not None:
        msg += f"; it learned and then {collapse}"
    big_step = ctx.step_too_large
    if big_step is not None:
        msg += f"; {big_step}, so the plateau is not the data's floor"
    remedies = (
        [
            ("train_longer", "the loss was still falling when training stopped"),
            ("raise_learning_rate", "reach the minimum in fewer epochs"),
        ]
        if still_falling
        else [
            ("larger_model", "more capacity to fit the training data"),
            ("raise_learning_rate", "a too-small step stalls early"),
        ]
    )
    remedies += [
        ("switch_optimizer", "Adam adapts the step size per parameter"),
        ("he_init", "a proper initial scale lets every layer learn from the start"),
        ("batch_norm", "eases optimization of deeper models"),
    ]
    if not still_falling:
        remedies.insert(2, ("train_longer", "give it more epochs once it learns"))
    if big_step is not None:
        remedies.insert(0, ("lower_learning_rate", big_step))
    if held is not None:
        remedies.insert(0, ("weight_decay", f"lower the weight decay ({held})"))
    if floor is not None:
        msg += (
            f"; but this looks like the data's noise floor ({floor}), so it is a note: if the data allows "
            "more, a larger model is the first thing to try"
        )
    return ctx.finding(
        Severity.INFO if floor is not None else Severity.WARNING,
        msg,
        {
            "split": tr,
            "train_accuracy": final,
            "best_train_accuracy": best,
            "train_loss": float(tl[-1]) if len(tl) else None,
            "chance_loss": chance,
            "loss_still_falling": still_falling,
            "confusion": pattern,
            "held_by_weight_decay": held,
            "noise_floor": floor,
        },
        remedies,
        confidence(
            max((t.underfit_train_accuracy - best) / 0.2, 0.5 if held is not None else -1.0),
            min(1.0, len(acc) / 5),
        ),
        epoch=int(ctx.eval(tr, "accuracy").steps[-1]),
        split=tr,
    )


def _collapsed(ctx: Context, tr: str, final: float, best: float) -> str | None:
    """The model learned (see :attr:`Context.learned`) and its training accuracy fell back: it ends below
    `underfit_train_accuracy`, at least max(20 points, 3 standard errors of a difference) below its best
    (often all the way to chance, which the reason then says). Says why when the loss tells (a loss that falls
    without bound is not bounded below for these outputs). None when it did not collapse."""
    t = ctx.t
    if not (ctx.learned is True and final < t.underfit_train_accuracy):
        return None
    counts = ctx.class_counts(tr)
    if counts is None or counts.sum() == 0:
        return None
    chance = float(counts.max() / counts.sum())
    se = float(np.nan_to_num(ctx.accuracy_se(final, tr), nan=0.0))
    if not best - final >= max(0.2, 3.0 * math.sqrt(2.0) * se):
        return None
    near_chance = final <= chance + max(0.1, 3.0 * se)
    why = f"best {best:.1%}, chance {chance:.1%}" + ("" if near_chance else f", {best - final:.0%} lost")
    if ctx.loss is not None and ctx.loss.values.size >= 20:
        m = window_means(ctx.loss.values, 10)
        if m[-1] < 0 and m[-1] < m[0] and abs(m[-1]) > 10.0 * max(abs(m[0]), 1e-6):
            why += (
                f"; the loss fell without bound ({fmt(float(m[0]))} → {fmt(float(m[-1]))}), so it is not bounded "
                "below for these outputs: NLLLoss needs log-probabilities (log_softmax first), or the loss's sign "
                "is flipped"
            )
    return f"collapsed to chance ({why})" if near_chance else f"lost what it learned ({why})"


# below this training accuracy a plateau under a weight decay above its usual range is the penalty's doing
WEIGHT_DECAY_HELD_BELOW = 0.9


def _held_by_weight_decay(ctx: Context, tr: str, acc: np.ndarray, final: float) -> str | None:
    """A weight decay above its usual range (:attr:`Context.weight_decay_too_large`) and a training accuracy
    that plateaued below `WEIGHT_DECAY_HELD_BELOW` (at least 4 epochs; the mean of the last third of the epochs
    is not above the third before by max(3 points, 3 standard errors of a difference of means; an epoch's noise
    is the larger of the binomial standard error and the epochs' scatter)): the penalty, not the data, keeps the model from fitting. None
    otherwise."""
    why = ctx.weight_decay_too_large
    a = acc[np.isfinite(acc)]
    if why is None or len(a) < 4 or not final < WEIGHT_DECAY_HELD_BELOW:
        return None
    k = max(2, len(a) // 3)
    # an epoch's noise: the binomial standard error at the split's size, or the epoch-to-epoch scatter of the
    # last two thirds when the optimizer makes it larger (a large step with momentum swings by several points)
    se = max(float(np.nan_to_num(ctx.accuracy_se(final, tr), nan=0.0)), float(np.std(a[-2 * k :])))
    if float(a[-k:].mean() - a[-2 * k : -k].mean()) > max(0.03, 3.0 * math.sqrt(2.0 / k) * se):
        return None  # still climbing: not a plateau yet
    return why


def _at_floor(ctx: Context, tr: str, acc: np.ndarray, acc_ho: float) -> str | None:
    """A low training accuracy that is the data's noise floor rather than underfitting: the model clearly
    learned (well above chance), training and held-out accuracy agree within their noise, the training
    accuracy stopped moving over the last third of the epochs, and no hidden layer is narrower than the
    number of classes (a bottleneck would be the model's limit, not the data's). None when not a floor."""
    a = acc[np.isfinite(acc)]
    if ctx.learned is not True or len(a) < 6 or not math.isfinite(acc_ho):
        return None
    if ctx.step_too_large is not None or ctx.weight_decay_too_large is not None:
        # a plateau under a step far too large (or a penalty far too strong) is the optimizer's limit, not
        # the data's
        return None
    final = float(a[-2:].mean())
    counts = ctx.class_counts(tr)
    if counts is not None and counts.sum():
        # a floor is far above chance at the end, not only at its best epoch
        chance = float(counts.max() / counts.sum())
        se_c = float(np.nan_to_num(ctx.accuracy_se(chance, tr), nan=0.0))
        if final < chance + max(0.25 * (1.0 - chance), 3.0 * se_c):
            return None
    se = ctx.gap_se(final, tr, acc_ho, ctx.heldout_split)
    if abs(final - acc_ho) > max(0.03, 2.0 * se):
        return None
    k = max(2, len(a) // 3)
    moved = float(a[-k:].max() - a[-k:].min())
    if moved > max(0.03, 3.0 * np.nan_to_num(ctx.accuracy_se(final, tr), nan=0.0)):
        return None
    c = max(ctx.n_classes, 2)
    for m in ctx.models:
        layers = [
            lay for lay in m.get("layers", []) if isinstance(lay.get("init"), dict) and not lay.get("norm")
        ]
        for lay in layers[:-1]:
            if int(lay["init"].get("fan_out") or c) < c:
                return None
    return (
        f"train {final:.1%} ≈ held-out {acc_ho:.1%} within noise, flat over the last {k} epochs, "
        "far above chance, no bottleneck layer"
    )


# below this remaining error (1 - accuracy), a run stopped while still improving lost little: a note
STOPPED_EARLY_MIN_HEADROOM = 0.05


def _stopped_early(ctx: Context) -> Finding | None:
    """Training stopped while the held-out split was still improving steadily, beyond its noise: the
    model is under-trained (too few updates or epochs), the remedy is to train longer."""
    sp = ctx.heldout_split or ctx.train_split
    if sp is None or ctx.restored_epoch is not None:
        return None
    acc = ctx.eval(sp, "accuracy")
    a = acc.values
    if len(a) < 2 or not np.isfinite(a).all():
        return None
    if len(a) == 2:
        return _stopped_after_two(ctx, sp, acc)
    k = min(max(2, len(a) // 3), len(a) - 1)
    gain = float(a[-1] - a[-k - 1])
    last_gain = float(a[-1] - a[-2])
    se = ctx.accuracy_se(float(a[-1]), sp)
    se = 0.0 if not math.isfinite(se) else se
    need = max(0.03, 3.0 * math.sqrt(2.0) * se)
    need_last = max(0.01, 2.0 * math.sqrt(2.0) * se)  # still steep at the very end, not levelling off
    rising = float(np.mean(np.diff(a[-k - 1 :]) > 0))
    lv = ctx.eval(sp, "loss").values
    loss_falling = True
    if len(lv) == len(a) and np.isfinite(lv).all() and len(lv) > k:
        loss_falling = bool(lv[-1] < 0.9 * lv[-k - 1] and np.mean(np.diff(lv[-k - 1 :]) < 0) >= 0.75)
    if not (gain >= need and last_gain >= need_last and rising >= 0.75 and loss_falling):
        return None
    t = ctx.t
    msg = (
        f"stopped too early: {sp} accuracy was still rising when training ended (+{gain:.1%} over the last "
        f"{k} epochs to {a[-1]:.1%}, +{last_gain:.1%} in the last one; {rising:.0%} of those epochs improved; "
        f"noise levels {need:.1%} and {need_last:.1%} from n={ctx.n_samples(sp)})"
    )
    # harm: what training longer can still win is at most the remaining error
    headroom = 1.0 - float(a[-1])
    minor = headroom < STOPPED_EARLY_MIN_HEADROOM
    if minor:
        msg += f"; at most {headroom:.1%} is left to gain, so this is a note: more epochs may add a little"
    return ctx.finding(
        Severity.INFO if minor else Severity.WARNING,
        msg,
        {
            "kind": "stopped_early",
            "split": sp,
            "accuracy_gain_last_epochs": gain,
            "accuracy_gain_last_epoch": last_gain,
            "epochs_judged": k,
            "share_improving": rising,
            "noise_level": need,
            "final_accuracy": float(a[-1]),
            "threshold_train_accuracy": t.underfit_train_accuracy,
        },
        [
            ("train_longer", "the held-out accuracy was still rising steadily at the end"),
            ("raise_learning_rate", "reach the minimum in fewer epochs"),
            ("lr_schedule", "a warm-up then decay converges faster"),
        ],
        confidence(gain / need - 1.0, min(1.0, len(a) / 6)),
        epoch=int(acc.steps[-1]),
        split=sp,
    )


def _loss_still_falling(ctx: Context) -> tuple[bool, float, float]:
    """The per-step training loss still falls at the end: a straight line fitted to the last half of the
    steps slopes down by more than 3 standard errors of its slope (mini-batch noise is what scatters the
    points about the line) and drops by at least 5% of its level over that half. Returns (falling, the line's
    value at the start and at the end of that half)."""
    loss = ctx.loss
    if loss is None:
        return False, float("nan"), float("nan")
    v = loss.values[np.isfinite(loss.values)].astype(np.float64)
    if v.size < 20:
        return False, float("nan"), float("nan")
    y = v[len(v) // 2 :]
    x = np.arange(len(y), dtype=np.float64)
    slope, icept = np.polyfit(x, y, 1)
    resid = y - (slope * x + icept)
    se = math.sqrt(float(resid @ resid) / max(len(y) - 2, 1) / float(((x - x.mean()) ** 2).sum()))
    first, last = float(icept), float(icept + slope * x[-1])
    # beyond noise (3 standard errors of the slope: a full-batch loss has almost none) and by enough to matter:
    # at least 5% of its level over that half
    return bool(slope < -3.0 * se and first - last >= 0.05 * abs(first)), first, last


def _stopped_after_two(ctx: Context, sp: str, acc: Any) -> Finding | None:
    """A run with two evaluations (two epochs, or a score before and after training) that stopped while
    steeply improving: the held-out accuracy rose by max(5 points, 4 standard errors of a difference) in its
    one interval, the per-step training loss was still falling at the end beyond its mini-batch noise, and at
    least 5 points of error remain. One interval cannot show a trend, so the bar is higher than with more."""
    a = acc.values
    gain = float(a[-1] - a[-2])
    se = ctx.accuracy_se(float(a[-1]), sp)
    se = 0.0 if not math.isfinite(se) else se
    need = max(0.05, 4.0 * math.sqrt(2.0) * se)
    falling, prev, last = _loss_still_falling(ctx)
    headroom = 1.0 - float(a[-1])
    if not (gain >= need and falling and headroom >= STOPPED_EARLY_MIN_HEADROOM):
        return None
    msg = (
        f"stopped too early: {sp} accuracy rose {gain:+.1%} to {a[-1]:.1%} between its only two evaluations "
        f"(noise level {need:.1%} from n={ctx.n_samples(sp)}), and the training loss was still falling when "
        f"training ended ({fmt(prev)} → {fmt(last)} along a line fitted to the last half of the steps, whose "
        "slope is beyond 3 standard errors of mini-batch noise)"
    )
    return ctx.finding(
        Severity.WARNING,
        msg,
        {
            "kind": "stopped_early",
            "split": sp,
            "accuracy_gain_last_epoch": gain,
            "epochs_judged": 1,
            "noise_level": need,
            "final_accuracy": float(a[-1]),
            "loss_trend_last_half": [prev, last],
        },
        [
            ("train_longer", "the model was still improving fast when training ended"),
            ("raise_learning_rate", "reach the minimum in fewer epochs"),
            ("lr_schedule", "a warm-up then decay converges faster"),
        ],
        confidence(gain / need - 1.0, 0.6),
        epoch=int(acc.steps[-1]),
        split=sp,
    )


@check(
    "train_test_mismatch",
    requires=("heldout_eval",),
    thresholds=("mismatch_gap",),
    remedies=("fix_labels", "normalize_inputs", "more_data", "data_augmentation", "batch_norm"),
    what="Held-out accuracy is at least `mismatch_gap` above training accuracy, both at the last epoch and "
    "averaged over the last three epochs (accuracies measured in eval mode), and by at least 2 standard errors "
    "of the difference at the splits' sizes; or train and eval mode disagree: the training split scored in "
    "eval mode has a loss at least 2x (+0.1) and 3 mini-batch standard errors above the train-mode loss of "
    "that epoch's batches, in each of the last two epochs (batch-norm statistics never updated, layers that "
    "act differently in eval mode); or the held-out split was scored with dropout/batch-norm modules in "
    "training mode (a forgotten model.eval()) at the last evaluation and at least half of the others; or "
    "*nothing learned carries over*: the training split (a clean pass or the running train-mode metrics) "
    "reached max(`underfit_train_accuracy`, halfway from chance to 100%) in balanced accuracy while the "
    "held-out split ends at chance — within max(5 points, 3 standard errors of an accuracy at chance with the "
    "held-out size) — over at least 3 evaluations; or *scaled apart*: the model's logits spread at least 4x "
    "wider on the held-out split than on the training split (clean pass, else the running metrics from epoch 1) "
    "at the same epochs (median ratio over at least 2 epochs, every ratio at least 2x; the spread is the root "
    "mean square of each sample's logits around their mean, recorded as `output_scale`), while held-out "
    "accuracy ends below training accuracy by max(3 points, 2 standard errors of a difference) — held-out inputs "
    "that skipped the training inputs' scaling. Overfitting leaves the held-out score above chance; ending "
    "at chance means the splits differ (preprocessing fitted on one split only, another distribution, frozen "
    "batch-norm statistics, an augmentation that changes the inputs, labels shuffled apart from their inputs), "
    "and `overfitting` is then not reported.",
    why="A model should not do clearly better on data it never saw: the splits differ (noisier or "
    "corrupted training labels/inputs, a different distribution, or a bug in the pipeline).",
    evidence="accuracy per split, the gap, class distributions of the splits (total-variation distance)",
)
def check_train_test_mismatch(ctx: Context) -> Finding | None:
    tr, ho = ctx.train_split, ctx.heldout_split
    assert ho is not None
    measured = _scored_in_train_mode(ctx, ho)
    if measured is None:
        measured = _no_transfer_finding(ctx)
    if measured is None:
        measured = _scale_mismatch_finding(ctx)
    if measured is not None or tr is None or tr != "train":
        # running training metrics (train mode, averaged over an epoch of a learning model) lag behind a
        # clean held-out pass: comparing them would be unlike with like, so only a clean pass is judged
        return measured
    a_tr, a_ho = ctx.eval(tr, "accuracy").values, ctx.eval(ho, "accuracy").values
    n = min(len(a_tr), len(a_ho), 3)
    if n == 0:
        return None
    gap_last = float(a_ho[-1] - a_tr[-1])
    gap_mean = float(np.nanmean(a_ho[-n:]) - np.nanmean(a_tr[-n:]))
    thr = ctx.t.mismatch_gap
    se_gap = ctx.gap_se(float(a_tr[-1]), tr, float(a_ho[-1]), ho)
    if not (gap_last >= thr and gap_mean >= thr and gap_last >= 2.0 * se_gap):
        return _mode_mismatch(ctx, tr)
    ev: dict[str, object] = {
        "train_accuracy": float(a_tr[-1]),
        "heldout_accuracy": float(a_ho[-1]),
        "gap": gap_last,
        "gap_mean_last_epochs": gap_mean,
        "split": ho,
    }
    c_tr, c_ho = ctx.class_counts(tr), ctx.class_counts(ho)
    tv = float("nan")
    if c_tr is not None and c_ho is not None and len(c_tr) == len(c_ho) and c_tr.sum() and c_ho.sum():
        tv = float(0.5 * np.abs(c_tr / c_tr.sum() - c_ho / c_ho.sum()).sum())
        ev["class_distribution_tv"] = tv
    msg = f"{ho} accuracy {a_ho[-1]:.1%} is {gap_last:.1%} above train accuracy {a_tr[-1]:.1%} (threshold {thr:.0%})"
    if np.isfinite(tv):
        msg += f"; class distributions differ by {tv:.0%} (total variation)"
    return ctx.finding(
        Severity.WARNING,
        msg,
        ev,
        [
            ("fix_labels", "noisy training labels lower training accuracy but not held-out accuracy"),
            ("normalize_inputs", "make sure both splits go through the same preprocessing"),
            ("more_data", "collect training data from the distribution the model is evaluated on"),
            (
                "data_augmentation",
                "if augmentation is too strong, it makes the training split harder than the world",
            ),
        ],
        confidence(min(gap_last, gap_mean) / thr - 1.0, min(1.0, n / 3)),
        epoch=int(ctx.eval(ho, "accuracy").steps[-1]),
        split=ho,
    )


def _scale_mismatch_finding(ctx: Context) -> Finding | None:
    sm = ctx.output_scale_mismatch
    if sm is None:
        return None
    msg = (
        f"the model's outputs on {sm['split']} spread {sm['ratio']:.1f}x wider than on {sm['train_split']} "
        f"(logit spread {fmt(sm['heldout_output_scale'])} vs {fmt(sm['train_output_scale'])}, median over "
        f"{len(sm['epochs'])} epochs; threshold {SCALE_MISMATCH:g}x): the {sm['split']} inputs are not on the "
        f"training inputs' scale (e.g. a scaler fitted and applied to the training split only), and "
        f"{sm['split']} accuracy {sm['heldout_accuracy']:.1%} is {sm['gap']:.1%} below training accuracy "
        f"{sm['train_accuracy']:.1%} (noise {max(0.03, 2.0 * sm['gap_standard_error']):.1%})"
    )
    return ctx.finding(
        Severity.WARNING,
        msg,
        {**sm, "rule": "output_scale", "threshold_ratio": SCALE_MISMATCH},
        [
            (
                "normalize_inputs",
                "fit the preprocessing on the training split and apply the same transform to every split",
            ),
        ],
        confidence(sm["ratio"] / SCALE_MISMATCH - 1.0, min(1.0, len(sm["epochs"]) / 3)),
        epoch=int(sm["epochs"][-1]),
        split=sm["split"],
    )


def _no_transfer_finding(ctx: Context) -> Finding | None:
    nt = _no_transfer(ctx)
    if nt is None:
        return None
    name = _METRIC_NAME[nt["metric"]]
    msg = (
        f"nothing learned carries over: {nt['train_split']} {name} reached {nt['train']:.1%} while {nt['split']} "
        f"{name} ends at chance ({nt['heldout_last']:.1%} at the end, best {nt['heldout_best']:.1%}; "
        f"chance {nt['chance']:.1%}, noise margin {nt['margin']:.1%}): the held-out split differs from the "
        "training split (preprocessing applied to one split only, another distribution, batch-norm statistics "
        "that never update, an augmentation that changes the inputs, or training labels detached from their "
        "inputs)"
    )
    ev = dict(nt)
    ev["kind"] = "no_transfer"
    ev["noise"] = (
        "held-out score against chance + max(5 points, 3 standard errors at chance and the split's size)"
    )
    return ctx.finding(
        Severity.WARNING,
        msg,
        ev,
        [
            (
                "normalize_inputs",
                "put every split through the same preprocessing, fitted on the training split",
            ),
            ("batch_norm", "check that batch-norm running statistics update in training (momentum, train())"),
            ("data_augmentation", "augmentation must not change what an input looks like at test time"),
            ("fix_labels", "check that training labels stay paired with their inputs when shuffling"),
        ],
        confidence((nt["train"] - nt["chance"]) / max(nt["margin"], 1e-9) / 4.0 - 1.0, 1.0),
        epoch=int(ctx.eval(nt["split"], nt["metric"]).steps[-1]),
        split=nt["split"],
    )


def _scored_in_train_mode(ctx: Context, ho: str) -> Finding | None:
    """The held-out split was scored with dropout / batch-norm modules still in training mode (a forgotten
    ``model.eval()``) at its last evaluation and most of the others: its metrics are not what the model
    does at inference."""
    recs = [r for r in ctx.r.records("eval_mode", ho) if isinstance(r.get("data"), dict)]
    if not recs:
        return None
    # one record per change of state (older runs: one per evaluation): each evaluation of the split is in
    # the state of the last record at or before its epoch
    states: list[dict[str, Any]] = []
    at = 0
    for epoch in ctx.r.epochs(ho):
        while at < len(recs) and (recs[at].get("epoch") is None or int(recs[at]["epoch"]) <= epoch):
            at += 1
        if at:
            states.append(recs[at - 1])
    if not states:
        return None
    flags = [int(r["data"].get("train_mode_modules") or 0) > 0 for r in states]
    if not (flags[-1] and sum(flags) >= max(1, len(flags) // 2)):
        return None
    recs = states
    names = [str(n) for n in recs[-1]["data"].get("names") or []]
    n = int(recs[-1]["data"].get("train_mode_modules") or 0)
    msg = (
        f"train and eval mode disagree: {ho} was scored with {n} dropout/batch-norm module(s) in training "
        f"mode ({', '.join(names[:3])}{'…' if n > 3 else ''}) in {sum(flags)} of {len(flags)} evaluations, "
        "including the last: its metrics are not what the model does at inference (call model.eval() before "
        "scoring)"
    )
    return ctx.finding(
        Severity.WARNING,
        msg,
        {
            "kind": "scored_in_train_mode",
            "split": ho,
            "train_mode_modules": n,
            "modules": names,
            "evaluations_in_train_mode": int(sum(flags)),
            "evaluations": len(flags),
        },
        [
            ("normalize_inputs", "score every split the same way: model.eval() and the same preprocessing"),
            ("batch_norm", "batch-norm in training mode normalizes with the scored batch's own statistics"),
        ],
        confidence(1.0, min(1.0, len(flags) / 3)),
        epoch=int(recs[-1]["epoch"]) if recs[-1].get("epoch") is not None else None,
        split=ho,
    )


def _mode_mismatch(ctx: Context, tr: str) -> Finding | None:
    """Train mode and eval mode disagree: the model scored in eval mode on the training split does far
    worse than the per-step (train-mode) loss on the same data in the same epochs — batch-norm statistics
    never updated, a layer that behaves differently in eval mode, or a preprocessing applied only in
    training. Judged on the last two epochs (both must show it)."""
    if ctx.loss is None or ctx.diverged:
        return None
    ev_loss = ctx.eval(tr, "loss")
    steps_of = ctx.r.eval_steps(tr)
    if len(ev_loss) < 2 or not np.isfinite(ev_loss.values[-2:]).all():
        return None
    ls, lv = ctx.loss.steps, ctx.loss.values
    pairs = []
    epochs = [int(e) for e in ev_loss.steps]
    for i in (len(epochs) - 2, len(epochs) - 1):
        e = epochs[i]
        end = steps_of.get(e)
        start = steps_of.get(epochs[i - 1], -1) if i > 0 else -1
        if end is None:
            return None
        seg = lv[(ls > start) & (ls <= end) & np.isfinite(lv)]
        if seg.size < 3:
            return None
        se = float(seg.std() / np.sqrt(seg.size))
        pairs.append((float(ev_loss.values[i]), float(seg.mean()), se))
    if not all(ev >= 2.0 * run + 0.1 and ev - run >= 3.0 * se for ev, run, se in pairs):
        return None
    ev_l, run_l, se = pairs[-1]
    acc = ctx.eval(tr, "accuracy").values
    msg = (
        f"train and eval mode disagree: scored in eval mode, the training split's loss is {fmt(ev_l)}, "
        f"{ev_l / max(run_l, 1e-12):.1f}x the train-mode loss of the same epoch's batches ({fmt(run_l)}; "
        f"mini-batch standard error {fmt(se)}), in each of the last two epochs"
    )
    if len(acc):
        msg += f"; eval-mode train accuracy {acc[-1]:.1%}"
    return ctx.finding(
        Severity.WARNING,
        msg,
        {
            "kind": "train_eval_mode",
            "eval_mode_train_loss": ev_l,
            "train_mode_loss": run_l,
            "train_mode_loss_se": se,
            "noise": "eval-mode loss at least 2x + 0.1 and 3 standard errors above the batches' mean loss",
            "split": tr,
        },
        [
            ("batch_norm", "check that batch-norm running statistics update in training (momentum, train())"),
            ("normalize_inputs", "apply the same preprocessing in training and evaluation"),
            ("data_augmentation", "augmentation must not change what a label means"),
        ],
        confidence(math.log(ev_l / max(2.0 * run_l + 0.1, 1e-12)) * 2, 1.0),
        epoch=int(ev_loss.steps[-1]),
        split=tr,
    )


def _oscillation(m: np.ndarray) -> tuple[float, float]:
    """Share of sign changes between consecutive differences, and path efficiency |net| / total variation."""
    d = np.diff(m)
    if len(d) < 3:
        return 0.0, 1.0
    sc = float(np.mean(np.sign(d[1:]) != np.sign(d[:-1])))
    tv = float(np.abs(d).sum())
    eff = float(abs(m[-1] - m[0]) / tv) if tv > 0 else 1.0
    return sc, eff


@check(
    "inefficient_learning",
    requires=("loss",),
    thresholds=(
        "plateau_rel_improvement",
        "stall_loss_fraction",
        "slow_update_ratio",
        "oscillation_ratio",
        "oscillation_efficiency",
        "oscillation_amplitude",
    ),
    remedies=(
        "raise_learning_rate",
        "lower_learning_rate",
        "lr_schedule",
        "add_momentum",
        "switch_optimizer",
        "batch_norm",
        "gradient_clipping",
        "restore_best_checkpoint",
    ),
    what="On 20 windows of the per-step loss: *stalled/slow* when the loss ends above `stall_loss_fraction` of "
    "where it started and either the last three tenths of training each improved less than "
    "`plateau_rel_improvement`, or the median update/weight ratio is below `slow_update_ratio`; "
    "*oscillating* when, besides ending above `stall_loss_fraction`, at least `oscillation_ratio` of "
    "consecutive window-to-window changes flip sign, the net change is below `oscillation_efficiency` of the "
    "total variation, and the per-step loss swings (std/mean within windows, second half) by at least "
    "`oscillation_amplitude` — a flat, quiet loss is a stall, not an oscillation. Noise and harm: a stall "
    "needs a plateau that is not a floor (the model did not learn: best accuracy below "
    "`underfit_train_accuracy` and near chance; with no accuracy recorded, the loss ended above 90% of its "
    "start); an oscillation needs either lasting damage (the last evaluated accuracy of the training split fell "
    "from its best by max(5 points, 3 standard errors of a difference) — or the held-out split's, when the "
    "training split is the running metrics of the batches, which lag —, or the median of the last three "
    "loss windows is twice the best window or more, by at least 3·sqrt(2) mini-batch standard errors of a "
    "window mean) or no learning with window-to-window moves "
    "of at least that size. *Unstable* when the loss suffers that lasting damage, ends off its best stretch by that noise, and shows no oscillation "
    "pattern. "
    "Under an effective step above its optimizer's usual range (see `underfitting`), the first steps' "
    "blow-up inflates the loss's start, so the oscillation pattern needs no `stall_loss_fraction`: its harm "
    "is then the held-out accuracy swinging from evaluation to evaluation (at least 5 evaluations, half the "
    "moves flipping direction, a median move of max(3 points, 2 standard errors of a difference)), and "
    "*unstable* compares the loss's end with the median of its first quarter's windows instead of its first. "
    "With no accuracy recorded, a loss whose second half sits within 5% of ln C (C = the output layer's "
    "width) and moves by at most 10% of it is a stall at the chance level, whatever spike the start had; under "
    "a step above its optimizer's usual range, lowering the learning rate comes first. "
    "*No updates* (an error): every recorded update of every layer is exactly 0 over at least 3 captures, "
    "or the watched optimizer took no step while the loss was logged at least 20 times and its last tenth "
    "sits at 90% of its first or above (a zero update is exact: no noise model needed). "
    "Every converged run stops improving; that alone is not inefficient. A run whose config says it "
    "resumed from a checkpoint (`resume_from`, `resume_from_checkpoint`) starts near its floor: when its held-out "
    "loss ends no higher than it started, a flat or noisy loss counts as a stall only through the update/weight "
    "ratio.",
    why="Training time is wasted: a stalled or crawling loss means the step size or the optimizer does not "
    "suit the problem; a loss that swings up and down means steps overshoot.",
    evidence="window means of the loss, relative improvement per tenth, update/weight ratio, share of sign "
    "changes, path efficiency",
)
def check_inefficient_learning(ctx: Context) -> Finding | None:
    assert ctx.loss is not None
    if ctx.diverged:
        return None
    t = ctx.t
    x = ctx.loss.values
    frozen = _weights_never_moved(ctx)
    if frozen is not None:
        return frozen
    if len(x) < 40:
        return None
    m20 = window_means(x, 20)
    m10 = window_means(x, 10)
    start, end = float(m20[0]), float(m20[-1])
    frac = end / start if start > 0 else float("nan")
    rel = (m10[:-1] - m10[1:]) / np.maximum(np.abs(m10[:-1]), 1e-12)
    # progress must beat the mini-batch noise of a tenth's mean (2 sqrt(2) standard errors), not only
    # `plateau_rel_improvement`: noisy small batches make a flat loss look like it moves
    tenths = np.array_split(np.asarray(x, dtype=np.float64), 10)
    se10 = np.array([h.std() / np.sqrt(len(h)) if len(h) > 1 else 0.0 for h in tenths])
    noise_rel = 2.0 * np.sqrt(2.0) * se10[1:] / np.maximum(np.abs(m10[:-1]), 1e-12)
    plateau = bool((rel[-3:] < np.maximum(t.plateau_rel_improvement, noise_rel[-3:])).all())
    ur = ctx.layer("update_ratio")
    upd = (
        float(np.nanmedian(ur.values[:, _finite_cols(ur.values)]))
        if ur.values.size and _finite_cols(ur.values).any()
        else float("nan")
    )
    slow_updates = np.isfinite(upd) and upd < t.slow_update_ratio
    sc, eff = _oscillation(m20)
    windows = np.array_split(x, 20)
    halves = windows[10:]
    swing = float(np.median([h.std() / max(abs(h.mean()), 1e-12) for h in halves if len(h) > 1] or [0.0]))
    # mini-batch noise: what a window mean moves by chance (within-window std / sqrt(window length));
    # a swing of the windowed curve counts only when it is several times that
    w_se = float(np.median([h.std() / np.sqrt(len(h)) for h in windows if len(h) > 1] or [0.0]))
    moves = float(np.median(np.abs(np.diff(m20)))) if len(m20) > 1 else 0.0
    beyond_noise = moves >= 3.0 * np.sqrt(2.0) * w_se
    # lasting damage: the evaluated accuracy of the training split (else the judged one) ended clearly below
    # its best, or the loss of the last three windows (sustained, not one unlucky batch) sits far above the
    # best stretch of the run
    tail = float(np.median(m20[-3:]))
    loss_damage = bool(
        tail >= 2.0 * float(m20.min()) and tail - float(m20.min()) >= 3.0 * np.sqrt(2.0) * w_se
    )
    damaged = bool(_accuracy_damage(ctx) or loss_damage)
    learned = ctx.learned
    oscillating = (
        sc >= t.oscillation_ratio
        and eff < t.oscillation_efficiency
        and frac > t.stall_loss_fraction
        and swing >= t.oscillation_amplitude
        and ((learned is not True and beyond_noise) or damaged)
    )
    # under a step above its optimizer's usual range, the first steps' blow-up inflates the loss's start,
    # so "ends above half its start" misses an oscillation; the held-out accuracy swinging from epoch to
    # epoch beyond its noise is the harm then
    big_step = ctx.step_too_large
    ho_swings = _heldout_swings(ctx) if big_step is not None else None
    swings_by_step = bool(
        ho_swings is not None
        and not oscillating
        and sc >= t.oscillation_ratio
        and eff < t.oscillation_efficiency
        and swing >= t.oscillation_amplitude
    )
    oscillating = oscillating or swings_by_step
    # a plateau is a stall only when it is not a floor: the model has not learned (accuracy near chance
    # or below `underfit_train_accuracy`), or, with no accuracy recorded, the loss barely moved at all
    not_learned = (
        np.isfinite(frac)
        and frac > t.stall_loss_fraction
        and (learned is False or (learned is None and frac > 0.9))
    )
    # with no accuracy recorded: a mean cross-entropy flat at ln C (C = the output layer's width) over the
    # second half is a model predicting uniformly, whatever spike the start had
    chance_c = _chance_plateau(ctx, m20) if learned is None else None
    if chance_c is not None:
        not_learned = True
    # a run resumed from a trained model starts near its floor: "ends above half its start", a flat tail
    # and batch noise then mean convergence, not a stall or an oscillation — unless held-out loss got worse
    # over the run (slow updates still count)
    if _resumed(ctx) and _heldout_loss_not_worse(ctx):
        plateau = oscillating = False
    stalled = not_learned and (slow_updates or plateau)
    # unstable: the loss climbed back up and stays there (lasting damage), whatever the sign pattern
    # ... and the loss is not at its best stretch at the end (a weighted loss can trade accuracy for
    # balance while its own value keeps falling: that is not instability)
    off_best = tail - float(m20.min()) >= 3.0 * np.sqrt(2.0) * w_se
    # under a step above its optimizer's usual range the first steps' blow-up inflates the first window, so
    # the loss's early level is the median of the first quarter's windows there
    start_u = float(np.median(m20[:5])) if big_step is not None else start
    frac_u = end / start_u if start_u > 0 else float("nan")
    unstable = damaged and off_best and frac_u > t.stall_loss_fraction and not oscillating
    if not (stalled or oscillating or unstable):
        return None
    ev = {
        "loss_start": start,
        "loss_end": end,
        "loss_end_fraction": frac,
        "improvement_last_tenths": [float(r) for r in rel[-3:]],
        "median_update_ratio": upd,
        "sign_change_share": sc,
        "path_efficiency": eff,
        "swing": swing,
        "window_noise_se": w_se,
        "median_window_move": moves,
        "learned": learned,
        "noise": "window-to-window moves against 3 sqrt(2) x the mini-batch standard error of a window mean",
        "window_means": [float(v) for v in m20],
    }
    if unstable and not stalled:
        best_w = float(m20.min())
        msg = (
            f"the loss is unstable: after reaching {fmt(best_w)} it climbed back to {fmt(end)} "
            f"({end / best_w:.1f}x its best stretch, beyond the mini-batch noise {fmt(w_se)} of a window mean) "
            f"and ends at {frac:.0%} of its start"
        )
        remedies = [
            ("lower_learning_rate", "steps too large throw the weights out of the good region"),
            ("gradient_clipping", "bounds the updates of bad batches"),
            ("lr_schedule", "decay the step size as training settles"),
            ("restore_best_checkpoint", "the best stretch of the run had better weights"),
        ]
        ev["kind"] = "unstable"
        margin = np.log(end / max(best_w, 1e-12) / 2.0) * 2
    elif oscillating:
        msg = (
            f"the loss oscillates: {sc:.0%} of window-to-window changes flip sign (threshold "
            f"{t.oscillation_ratio:.0%}) and the net change is {eff:.0%} of the total movement (threshold "
            f"{t.oscillation_efficiency:.0%}); per-step swings are {swing:.0%} of the loss (threshold "
            f"{t.oscillation_amplitude:.0%}) and it ends at {frac:.0%} of its start"
        )
        remedies = [
            ("lower_learning_rate", "steps overshoot the minimum"),
            ("lr_schedule", "decay the step size as training settles"),
            ("add_momentum", "averages out the back-and-forth"),
            ("batch_norm", "smooths the loss surface"),
        ]
        ev["kind"] = "oscillating"
        margin = min(sc / t.oscillation_ratio - 1.0, 1.0 - eff / t.oscillation_efficiency) * 3
        if swings_by_step and ho_swings is not None:
            share, move, se, sp = ho_swings
            msg += (
                f"; {big_step}, and {sp} accuracy swings by a median {move:.1%} from one evaluation to the next "
                f"({share:.0%} of the moves flip direction; noise {se:.1%}, 2 standard errors of a difference)"
            )
            ev["heldout_swing"] = {"median_move": move, "flip_share": share, "noise": se, "split": sp}
            remedies.insert(0, ("lower_learning_rate", str(big_step)))
    else:
        why = []
        if plateau:
            why.append(
                f"the last three tenths of training each improved it less than {t.plateau_rel_improvement:.0%}"
            )
        if slow_updates:
            why.append(f"updates are {fmt(upd)} of the weights (threshold {fmt(t.slow_update_ratio)})")
        msg = (
            f"learning stalled: the loss ends at {frac:.0%} of its start ({fmt(start)} → {fmt(end)}, threshold "
            f"{t.stall_loss_fraction:.0%}); " + " and ".join(why)
        )
        if chance_c is not None:
            msg += (
                f"; over the second half it sits at the chance level ln {chance_c} = {fmt(math.log(chance_c))} "
                f"of a {chance_c}-way output: the model predicts every class alike"
            )
            ev["chance_plateau_classes"] = chance_c
        remedies = [
            ("raise_learning_rate", "the steps are too small to make progress"),
            ("switch_optimizer", "Adam adapts the step size per parameter"),
            ("add_momentum", "momentum carries SGD across flat regions"),
            ("lr_schedule", "warm up, then decay on plateaus"),
            ("batch_norm", "better-conditioned layers learn faster"),
        ]
        if slow_updates:
            remedies.insert(0, remedies.pop(0))
        if big_step is not None:
            # a step far too large kills units and freezes the loss: raising it further is the wrong way
            msg += f"; {big_step}"
            remedies = [("lower_learning_rate", big_step)] + [
                r for r in remedies if r[0] != "raise_learning_rate"
            ]
        ev["kind"] = "stalled" if plateau else "slow"
        margin = (frac - t.stall_loss_fraction) / (1 - t.stall_loss_fraction) * 2
    return ctx.finding(
        Severity.WARNING,
        msg,
        ev,
        remedies,
        confidence(margin, min(1.0, len(x) / 200)),
        step=int(ctx.loss.steps[len(x) * 7 // 10]) if stalled else int(ctx.loss.steps[0]),
    )


def _chance_plateau(ctx: Context, m20: np.ndarray) -> int | None:
    """The output layer's width C (at least 2) when the loss's second half (10 window means) lies within 5%
    of ln C and varies by at most 10% of ln C: a cross-entropy of uniform predictions. None otherwise."""
    width = 0
    for m in ctx.models:
        lays = [lay for lay in m.get("layers", []) if isinstance(lay.get("init"), dict)]
        if lays:
            width = int(lays[-1]["init"].get("fan_out") or 0)
    if width < 2 or len(m20) < 10:
        return None
    ln_c = math.log(width)
    half = np.asarray(m20[len(m20) // 2 :], dtype=np.float64)
    if abs(float(np.median(half)) - ln_c) <= 0.05 * ln_c and float(half.max() - half.min()) <= 0.1 * ln_c:
        return width
    return None


def _heldout_swings(ctx: Context) -> tuple[float, float, float, str] | None:
    """The held-out accuracy moves back and forth beyond its noise: at least 5 evaluations, at least half
    of the consecutive moves flip direction, and the median move is at least 2 standard errors of a
    difference at the split's size (and 3 points). (flip share, median move, noise, split) or None."""
    sp = ctx.heldout_split
    if sp is None:
        return None
    a = ctx.finite_eval(sp, "accuracy")
    if a.size < 5:
        return None
    d = np.diff(a)
    nz = d[d != 0]
    if nz.size < 3:
        return None
    share = float(np.mean(np.sign(nz[1:]) != np.sign(nz[:-1])))
    move = float(np.median(np.abs(d)))
    se = math.sqrt(2.0) * float(np.nan_to_num(ctx.accuracy_se(float(np.median(a)), sp), nan=0.0))
    if share >= 0.5 and move >= max(0.03, 2.0 * se):
        return share, move, 2.0 * se, sp
    return None


def _weights_never_moved(ctx: Context) -> Finding | None:
    """Every recorded update of every layer is exactly zero, over at least three captures spread over the
    run: the optimizer never changed a weight. Not a question of noise: a zero update is exact."""
    un = ctx.layer("update_norm")
    v = un.values
    if v.size == 0:
        return _optimizer_never_stepped(ctx)
    if v.shape[0] < 3:
        return None
    finite = v[np.isfinite(v)]
    if finite.size == 0 or bool((finite != 0).any()):
        return None
    gn = ctx.layer("grad_norm").values
    g = gn[np.isfinite(gn)] if gn.size else gn
    no_grad = g.size > 0 and not bool((g != 0).any())
    why = (
        "and no layer received a gradient (the loss is not connected to the model: a `.detach()`, a "
        "`torch.no_grad()` around the forward pass, or parameters with requires_grad=False)"
        if no_grad
        else "although gradients arrive (`optimizer.step()` is never called, the learning rate is 0, or the "
        "optimizer holds other parameters than the model)"
    )
    msg = (
        f"the weights never changed: the update of every layer is exactly 0 at all {v.shape[0]} captures "
        f"(steps {int(un.steps[0])}–{int(un.steps[-1])}), {why}"
    )
    return ctx.finding(
        Severity.ERROR,
        msg,
        {
            "kind": "no_updates",
            "captures": int(v.shape[0]),
            "layers": int(v.shape[1]) if v.ndim == 2 else 1,
            "gradients_zero": no_grad,
            "noise": "none needed: a zero update is exact",
        },
        [
            (
                "switch_optimizer",
                "check that optimizer.step() runs and that the optimizer holds the model's parameters",
            ),
            ("raise_learning_rate", "a learning rate of 0 moves nothing"),
        ],
        1.0,
        step=int(un.steps[0]),
    )


def _optimizer_never_stepped(ctx: Context) -> Finding | None:
    """The run watched an optimizer, logged the loss at least 20 times, and the optimizer took no step, while
    the loss stayed where it began (harm: an optimizer replaced after ``tm.watch`` would leave the watched
    one idle too, but then the loss falls)."""
    opts = ctx.r.meta.get("optimizers")
    steps = ctx.r.meta.get("steps")
    if not isinstance(opts, list) or not opts or not isinstance(steps, (int, float)) or int(steps) != 0:
        return None
    assert ctx.loss is not None
    x = ctx.loss.values[np.isfinite(ctx.loss.values)]
    if x.size < 20:
        return None
    m = window_means(x, 10)
    if not (m[0] > 0 and float(m[-1]) >= 0.9 * float(m[0])):
        return None
    return ctx.finding(
        Severity.ERROR,
        f"the weights never changed: the loss was logged {x.size} times and the watched optimizer took no "
        f"step (`optimizer.step()` is never called, or a different optimizer steps); the loss stayed at "
        f"{float(m[-1]) / float(m[0]):.0%} of its start",
        {"kind": "no_updates", "optimizer_steps": 0, "losses_logged": int(x.size), "gradients_zero": False},
        [
            (
                "switch_optimizer",
                "check that optimizer.step() runs on the optimizer that holds the model's parameters",
            )
        ],
        1.0,
        step=int(ctx.loss.steps[0]),
    )


def _accuracy_damage(ctx: Context) -> bool | None:
    """Did the model end clearly worse than its best epoch? The last evaluated accuracy of the training
    split (else the judged split) fell from its best by max(5 points, 3 standard errors of a difference); when
    the training split is the running metrics of the batches (an average over a model that changes during the
    epoch, so it lags), the held-out split's fall counts too. None when fewer than 3 epochs were evaluated."""
    sp = ctx.train_split or ctx.judged_split
    if sp is None:
        return None
    splits = [sp]
    if sp.endswith("_running") and ctx.heldout_split is not None:
        splits.append(ctx.heldout_split)
    out: bool | None = None
    for s in splits:
        a = ctx.finite_eval(s, "accuracy")
        if a.size < 3:
            continue
        best, last = float(a.max()), float(a[-1])
        se = ctx.accuracy_se(last, s)
        need = max(0.05, 3.0 * math.sqrt(2.0) * (se if math.isfinite(se) else 0.0))
        out = bool(out) or best - last >= need
    return out


RESUME_KEYS = ("resume_from", "resume_from_checkpoint")


def _resumed(ctx: Context) -> bool:
    """The run's config says it started from a checkpoint (``resume_from`` / ``resume_from_checkpoint``)."""
    cfg = ctx.r.meta.get("config")
    return isinstance(cfg, dict) and any(cfg.get(k) not in (None, False, "") for k in RESUME_KEYS)


def _heldout_loss_not_worse(ctx: Context) -> bool:
    ho = ctx.heldout_split
    v = ctx.finite_eval(ho, "loss") if ho else np.zeros(0)
    return bool(len(v) >= 2 and v[-1] <= v[0])


def _finite_cols(v: np.ndarray) -> np.ndarray:
    return np.isfinite(v).any(axis=0) & (np.nan_to_num(v, nan=0.0) > 0).any(axis=0)
