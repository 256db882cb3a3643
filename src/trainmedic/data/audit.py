"""Audit a dataset before training: is it sufficient, balanced, relevant, properly labelled, diverse, low-noise?

Each criterion is one function that returns findings (``source="audit"``, ``split=`` set); a criterion that
crashes becomes an ``internal_error`` finding and never hides the others. Every message is formatted from the
same numbers and comparison that chose its severity, and every threshold used is in the evidence.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..errors import TrainmedicError
from ..findings import Diagnosis, Finding, RemedySuggestion, Severity, SkippedCheck
from ..settings import Thresholds
from ._inputs import SplitData, as_split
from .duplicates import Pooled, exact_groups, near_duplicate_pairs
from .labels import as_probabilities, checking_model, find_label_issues
from .learning_curve import LearningCurve, learning_curve
from .stats import SplitStats, benjamini_hochberg, ks_tests, scan_split, summary_features
from .thresholds import AuditThresholds, load_audit_thresholds

LabelCheck = Literal["auto", "full", "off"]
MAX_LISTED = 50  # indices listed in evidence


@dataclass
class _Context:
    splits: list[SplitData]
    stats: list[SplitStats]
    pooled: Pooled
    classes: np.ndarray  # class ids counted everywhere
    th: AuditThresholds
    seed: int
    progress: _Progress
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    signals: dict[str, Any] = field(default_factory=dict)
    skipped: list[SkippedCheck] = field(default_factory=list)
    exact: list[np.ndarray] = field(default_factory=list)  # pooled duplicate groups


class _Progress:
    """A rich progress bar when asked for, a no-op otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.bar: Any = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
            )

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[int], None] | None]:
        if self.bar is None:
            yield None
            return
        tid = self.bar.add_task(description, total=total)
        try:
            yield lambda k: self.bar.advance(tid, k)
        finally:
            self.bar.update(tid, completed=total)

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _finding(
    code: str,
    severity: Severity,
    message: str,
    split: str | None,
    evidence: dict[str, Any],
    remedies: Sequence[tuple[str, str]] = (),
    confidence: float = 1.0,
) -> Finding:
    return Finding(
        code=code,
        severity=severity,
        message=message,
        evidence=evidence,
        split=split,
        source="audit",
        remedies=[RemedySuggestion.of(c, why) for c, why in remedies],
        confidence=confidence,
    )


def _fmt_ratio(r: float) -> str:
    return "inf" if math.isinf(r) else f"{r:.3g}"


# --------------------------------------------------------------------------------------------- sufficient
def check_sufficient(ctx: _Context, model: Any, curve: LearningCurve | None) -> list[Finding]:
    th, out = ctx.th, []
    train = ctx.counts["train"]
    n_train = int(train.sum())
    k = len(ctx.classes)
    j = int(np.argmin(train))
    fewest, cls = int(train[j]), int(ctx.classes[j])
    ev = {
        "samples_per_class": dict(zip(ctx.classes.tolist(), train.tolist())),
        "num_classes": k,
        "n_train": n_train,
        "min_class_samples": th.min_class_samples,
    }
    if fewest < th.min_class_samples:
        out.append(
            _finding(
                "insufficient_data",
                Severity.WARNING,
                f"class {cls} has {fewest} training samples, fewer than {th.min_class_samples} per class",
                "train",
                ev,
                [
                    ("more_data", f"collect samples of class {cls} first"),
                    ("data_augmentation", "multiply the scarce classes"),
                    ("transfer_learning", "start from features learnt elsewhere"),
                ],
            )
        )
    else:
        out.append(
            _finding(
                "insufficient_data",
                Severity.INFO,
                f"every class has at least {fewest} training samples (>= {th.min_class_samples})",
                "train",
                ev,
            )
        )
    if model is not None:
        try:
            n_params = int(sum(p.numel() for p in model.parameters()))
        except AttributeError:
            raise TrainmedicError(
                f"`model` must be a torch.nn.Module (with .parameters()); got {type(model).__name__}"
            ) from None
        per = n_params / max(n_train, 1)
        ev2 = {
            "parameters": n_params,
            "n_train": n_train,
            "parameters_per_sample": per,
            "max_params_per_sample": th.max_params_per_sample,
        }
        if per > th.max_params_per_sample:
            out.append(
                _finding(
                    "insufficient_data",
                    Severity.WARNING,
                    f"the model has {per:.3g} parameters per training sample ({n_params} / {n_train}), more than "
                    f"{th.max_params_per_sample:g}",
                    "train",
                    ev2,
                    [
                        ("more_data", "more samples per parameter"),
                        ("smaller_model", "fewer parameters to fit"),
                        ("transfer_learning", "pretrained weights need fewer samples"),
                        ("data_augmentation", "more effective samples"),
                    ],
                )
            )
        else:
            out.append(
                _finding(
                    "insufficient_data",
                    Severity.INFO,
                    f"the model has {per:.3g} parameters per training sample, within {th.max_params_per_sample:g}",
                    "train",
                    ev2,
                )
            )
    if curve is not None:
        gain = curve.last_gain
        ev3 = {
            "fractions": curve.fractions,
            "sizes": curve.sizes,
            "scores": curve.scores,
            "gain": gain,
            "learning_curve_gain": th.learning_curve_gain,
        }
        if gain >= th.learning_curve_gain:
            out.append(
                _finding(
                    "insufficient_data",
                    Severity.WARNING,
                    f"the validation score still rises by {gain:.3g} from {curve.sizes[-2]} to {curve.sizes[-1]} training "
                    f"samples (>= {th.learning_curve_gain:g}): more data would help",
                    "train",
                    ev3,
                    [
                        ("more_data", "the learning curve has not flattened"),
                        ("data_augmentation", "cheaper than new labels"),
                    ],
                )
            )
        else:
            out.append(
                _finding(
                    "insufficient_data",
                    Severity.INFO,
                    f"the learning curve has flattened: +{gain:.3g} from {curve.sizes[-2]} to {curve.sizes[-1]} samples "
                    f"(< {th.learning_curve_gain:g})",
                    "train",
                    ev3,
                )
            )
    return out


# ----------------------------------------------------------------------------------------------- balanced
def check_balanced(ctx: _Context) -> list[Finding]:
    th, out = ctx.th, []
    for sp in ctx.splits:
        c = ctx.counts[sp.name]
        big, small = int(c.max()), int(c.min())
        ratio = big / small if small else math.inf
        p = c / c.sum()
        nz = p[p > 0]
        eff = float(np.exp(-(nz * np.log(nz)).sum()))
        ev = {
            "class_counts": dict(zip(ctx.classes.tolist(), c.tolist())),
            "imbalance_ratio": ratio,
            "effective_classes": eff,
            "num_classes": len(c),
            "largest_class": int(ctx.classes[np.argmax(c)]),
            "smallest_class": int(ctx.classes[np.argmin(c)]),
            "threshold_imbalance_ratio": th.imbalance_ratio,
            "severe_imbalance_ratio": th.severe_imbalance_ratio,
        }
        ctx.signals.setdefault("splits", {}).setdefault(sp.name, {}).update(
            {"imbalance_ratio": ratio, "effective_classes": eff}
        )
        head = f"largest/smallest class = {big}/{small} = {_fmt_ratio(ratio)}"
        tail = f"; effective classes {eff:.3g} of {len(c)}"
        if ratio >= th.imbalance_ratio:
            sev = Severity.ERROR if ratio >= th.severe_imbalance_ratio else Severity.WARNING
            limit = th.severe_imbalance_ratio if sev is Severity.ERROR else th.imbalance_ratio
            out.append(
                _finding(
                    "data_imbalance",
                    sev,
                    f"{head} (>= {limit:g}){tail}",
                    sp.name,
                    ev,
                    [
                        ("class_weights", "weight the loss by inverse class frequency"),
                        ("oversample", f"draw class {ev['smallest_class']} more often"),
                        ("undersample", f"draw class {ev['largest_class']} less often"),
                        ("more_data", "collect samples of the small classes"),
                    ],
                    confidence=min(1.0, 0.5 + 0.5 * (1 - th.imbalance_ratio / ratio)),
                )
            )
        else:
            out.append(
                _finding(
                    "data_imbalance", Severity.INFO, f"{head} (< {th.imbalance_ratio:g}){tail}", sp.name, ev
                )
            )
    return out


# ----------------------------------------------------------------------------------------------- relevant
def check_relevant(ctx: _Context) -> list[Finding]:
    from scipy.stats import chi2_contingency

    th, out = ctx.th, []
    train = ctx.counts["train"]
    feats_tr, names = summary_features(ctx.stats[0].sample, ctx.splits[0].sample_shape)
    for sp, st in zip(ctx.splits[1:], ctx.stats[1:]):
        c = ctx.counts[sp.name]
        unseen = [int(k) for k, a, b in zip(ctx.classes, train, c) if a == 0 and b > 0]
        missing = [int(k) for k, a, b in zip(ctx.classes, train, c) if a >= 3 and b == 0]
        both = (train + c) > 0
        table = np.stack([train[both], c[both]])
        pval = float(chi2_contingency(table)[1]) if both.sum() > 1 else 1.0
        tv = float(0.5 * np.abs(train / train.sum() - c / c.sum()).sum())
        ev = {
            "total_variation": tv,
            "chi2_pvalue": pval,
            "classes_unseen_in_train": unseen,
            "classes_missing_here": missing,
            "label_shift_tv": th.label_shift_tv,
            "shift_alpha": th.shift_alpha,
        }
        if unseen:
            out.append(
                _finding(
                    "train_test_mismatch",
                    Severity.ERROR,
                    f"classes {unseen} occur in {sp.name} but never in train: the model cannot learn them",
                    sp.name,
                    ev,
                    [("more_data", "add training samples of these classes")],
                )
            )
        elif pval < th.shift_alpha and tv >= th.label_shift_tv:
            out.append(
                _finding(
                    "train_test_mismatch",
                    Severity.WARNING,
                    f"label distribution of {sp.name} differs from train: total variation {tv:.3f} >= "
                    f"{th.label_shift_tv:g} (chi-square p = {pval:.2g} < {th.shift_alpha:g})",
                    sp.name,
                    ev,
                    [("more_data", "resplit with trainmedic.split(stratify=True)")],
                )
            )
        else:
            out.append(
                _finding(
                    "train_test_mismatch",
                    Severity.INFO,
                    f"label distribution of {sp.name} matches train: total variation {tv:.3f}, chi-square p = {pval:.2g}",
                    sp.name,
                    ev,
                )
            )
        feats, _ = summary_features(st.sample, sp.sample_shape)
        d_stat, p_feat = ks_tests(feats_tr, feats)
        q = benjamini_hochberg(p_feat)
        shifted = np.flatnonzero((q < th.shift_alpha) & (d_stat >= th.shift_ks_effect))
        shifted = shifted[np.argsort(-d_stat[shifted])]
        tested = "per-sample channel statistics" if names and names[0].startswith("channel") else "features"
        ev2 = {
            "tested": tested,
            "n_tested": len(names),
            "n_shifted": len(shifted),
            "shifted": [{"name": names[i], "ks": float(d_stat[i]), "q": float(q[i])} for i in shifted[:20]],
            "max_ks": float(d_stat.max()) if len(d_stat) else 0.0,
            "sample_rows": [len(feats_tr), len(feats)],
            "shift_alpha": th.shift_alpha,
            "shift_ks_effect": th.shift_ks_effect,
            "correction": "benjamini-hochberg",
        }
        if len(shifted):
            top = ", ".join(f"{names[i]} (KS {d_stat[i]:.2f})" for i in shifted[:3])
            out.append(
                _finding(
                    "train_test_mismatch",
                    Severity.WARNING,
                    f"{len(shifted)} of {len(names)} {tested} of {sp.name} are shifted from train (KS >= "
                    f"{th.shift_ks_effect:g}, BH q < {th.shift_alpha:g}): {top}",
                    sp.name,
                    ev2,
                    [
                        ("more_data", "collect held-out data from the training distribution"),
                        (
                            "normalize_inputs",
                            "if the shift is a scale/offset, normalize each split the same way",
                        ),
                    ],
                    confidence=float(min(1.0, d_stat[shifted[0]] / (2 * th.shift_ks_effect))),
                )
            )
        else:
            out.append(
                _finding(
                    "train_test_mismatch",
                    Severity.INFO,
                    f"no {tested} of {sp.name} shifted from train (largest KS {ev2['max_ks']:.3f})",
                    sp.name,
                    ev2,
                )
            )
    return out


# -------------------------------------------------------------------------------------------------- labels
def check_labels(ctx: _Context, outputs: Any, label_check: LabelCheck) -> list[Finding]:
    th, out = ctx.th, []
    k = int(ctx.classes.max()) + 1
    # conflicting labels on exact duplicates
    y_all = np.concatenate([s.y for s in ctx.splits])
    conflicts = [g for g in ctx.exact if len(np.unique(y_all[g])) > 1]
    if conflicts:
        listed = [
            [
                (
                    ctx.splits[int(ctx.pooled.split_of(np.array([i]))[0])].name,
                    int(ctx.pooled.local(np.array([i]))[0]),
                    int(y_all[i]),
                )
                for i in g[:10]
            ]
            for g in conflicts[:20]
        ]
        where = sorted({t[0] for grp in listed for t in grp}, key=[s.name for s in ctx.splits].index)
        n_rows = int(sum(len(g) for g in conflicts))
        out.append(
            _finding(
                "label_noise",
                Severity.WARNING,
                f"{len(conflicts)} groups of identical inputs ({n_rows} samples, in {', '.join(where)}) carry different labels",
                where[0],
                {
                    "conflicting_groups": len(conflicts),
                    "samples": n_rows,
                    "examples": listed,
                    "format": "(split, index, label)",
                },
                [
                    ("fix_labels", "one input cannot have two classes"),
                    ("deduplicate_splits", "keep one copy per input"),
                ],
            )
        )
    if label_check == "off" and outputs is None:
        ctx.skipped.append(SkippedCheck("label_noise", "label_check='off'"))
        return out
    if outputs is not None:
        train = ctx.splits[0]
        probs = as_probabilities(
            np.asarray(outputs.detach().cpu() if hasattr(outputs, "detach") else outputs), train.n, k
        )
        scope = np.arange(train.n)
        method = "confident learning on the given outputs"
    else:
        if len(ctx.classes) < 2:
            ctx.skipped.append(SkippedCheck("label_noise", "fewer than two classes"))
            return out
        scope = np.arange(ctx.pooled.n)
        limit = th.label_check_max_samples
        if label_check == "auto" and ctx.pooled.n > limit:
            rng = np.random.default_rng(ctx.seed)
            scope = np.sort(rng.choice(ctx.pooled.n, size=limit, replace=False))
        with ctx.progress.task("label check (cross-validated model)", 1) as tick:
            x = ctx.pooled.rows(scope)
            probs, judge, acc = checking_model(x, y_all[scope], k, seed=ctx.seed)
            if tick:
                tick(1)
        method = (
            f"confident learning on a 5-fold cross-validated {judge} (accuracy {acc:.1%}) over {len(scope)} "
            f"of {ctx.pooled.n} samples"
        )
        p = np.bincount(y_all[scope], minlength=k) / len(scope)
        chance = float(np.sum(p**2))  # agreement of a guess drawn from the class shares
        kappa = (acc - chance) / (1 - chance) if chance < 1 else 0.0
        ctx.signals["label_model"] = {"model": judge, "accuracy": acc, "chance": chance, "kappa": kappa}
        if kappa < th.label_check_min_kappa:
            # judge against the judge: a model that cannot predict the labels from these inputs calls
            # disagreement what is only its own blindness (a rule it cannot express), so nothing is judged
            ctx.skipped.append(
                SkippedCheck(
                    "label_noise",
                    f"the checking {judge} predicts the labels no better than kappa {kappa:.2f} "
                    f"(< {th.label_check_min_kappa}); labels cannot be judged from these inputs by it",
                )
            )
            out.append(
                _finding(
                    "label_noise",
                    Severity.INFO,
                    f"labels not judged: the best checking model ({judge}) reaches {acc:.1%} against chance "
                    f"{chance:.1%} (kappa {kappa:.2f} < {th.label_check_min_kappa}), so its disagreements say "
                    "nothing about the labels",
                    ctx.splits[0].name,
                    {"method": method, "kappa": kappa, "accuracy": acc, "chance": chance},
                )
            )
            return out
    labels = y_all[scope]
    issues = find_label_issues(probs, labels, th.label_suspect_max_probability)
    suspects_pooled = scope[issues.suspects]
    which = ctx.pooled.split_of(suspects_pooled)
    local = ctx.pooled.local(suspects_pooled)
    rate = issues.noise_rate
    for s, sp in enumerate(ctx.splits):
        in_scope = int(np.sum(ctx.pooled.split_of(scope) == s))
        if not in_scope:
            continue
        idx = local[which == s]
        ev = {
            "estimated_noise_rate": rate,
            "label_suspect_max_probability": th.label_suspect_max_probability,
            "suspected": int(len(idx)),
            "suspected_share": len(idx) / in_scope,
            "suspected_indices": idx[:MAX_LISTED].tolist(),
            "checked_samples": in_scope,
            "method": method,
            "label_noise_rate": th.label_noise_rate,
            "label_noise_error_rate": th.label_noise_error_rate,
        }
        share = len(idx) / in_scope  # the verdict is per split: its share of suspected labels
        if share >= th.label_noise_rate:
            sev = Severity.ERROR if share >= th.label_noise_error_rate else Severity.WARNING
            bound = th.label_noise_error_rate if sev is Severity.ERROR else th.label_noise_rate
            out.append(
                _finding(
                    "label_noise",
                    sev,
                    f"{len(idx)} of {in_scope} {sp.name} labels ({share:.1%} >= {bound:.0%}) are contradicted by "
                    f"their inputs (given label at most {th.label_suspect_max_probability:.0%} likely out of sample; "
                    f"estimated noise rate over all checked samples {rate:.1%}): wrong labels, or classes that "
                    "overlap this much",
                    sp.name,
                    ev,
                    [("fix_labels", f"review the {len(idx)} suspected samples, most suspicious first")],
                    confidence=min(1.0, share / (2 * th.label_noise_rate)),
                )
            )
        else:
            out.append(
                _finding(
                    "label_noise",
                    Severity.INFO,
                    f"{len(idx)} of {in_scope} {sp.name} labels ({share:.1%} < {th.label_noise_rate:.0%}) look wrong "
                    f"(estimated noise rate over all checked samples {rate:.1%})",
                    sp.name,
                    ev,
                )
            )
        if outputs is not None:
            break
    ctx.signals["label_noise_rate"] = rate
    return out


# ------------------------------------------------------------------------------------------ diverse/leakage
def check_duplicates(
    ctx: _Context, near_pairs: tuple[np.ndarray, np.ndarray] | None, radius: float
) -> list[Finding]:
    th, out = ctx.th, []
    names = [s.name for s in ctx.splits]
    n_s = len(ctx.splits)
    leaked_exact: dict[tuple[int, int], set[int]] = {}
    within_exact = np.zeros(n_s, dtype=np.int64)
    for g in ctx.exact:
        which = ctx.pooled.split_of(g)
        for s in range(n_s):
            within_exact[s] += max(0, int(np.sum(which == s)) - 1)
        for later in range(1, n_s):
            for earlier in range(later):
                if np.any(which == earlier) and np.any(which == later):
                    leaked_exact.setdefault((earlier, later), set()).update(g[which == later].tolist())
    leaked_near: dict[tuple[int, int], set[int]] = {}
    within_near = [set() for _ in range(n_s)]  # type: list[set[int]]
    if near_pairs is not None:
        a, b = near_pairs
        sa, sb = ctx.pooled.split_of(a), ctx.pooled.split_of(b)
        for i, j, si, sj in zip(a.tolist(), b.tolist(), sa.tolist(), sb.tolist()):
            if si == sj:
                within_near[si].update((i, j))
            else:
                lo, hi = min(si, sj), max(si, sj)
                leaked_near.setdefault((lo, hi), set()).add(j if sj == hi else i)
    for later in range(1, n_s):
        n_held = ctx.splits[later].n
        for earlier in range(later):
            ex = sorted(leaked_exact.get((earlier, later), set()))
            nr = sorted(leaked_near.get((earlier, later), set()) - set(ex))
            # judge against the data's own closeness: a held-out point has a near neighbour in `earlier` about
            # as often as `earlier`'s own points have one among themselves, when both come from one source
            own = len(within_near[earlier]) / max(ctx.splits[earlier].n, 1)
            expected = own * n_held
            chance_near = len(nr) <= expected + 2.0 * math.sqrt(expected) + 1.0
            near_counted = [] if chance_near else nr
            total = len(ex) + len(near_counted)
            share = total / n_held
            ev = {
                "other_split": names[earlier],
                "exact_duplicates": len(ex),
                "near_duplicates": len(nr),
                "leaked_share": share,
                "exact_indices": ctx.pooled.local(np.array(ex, dtype=np.int64))[:MAX_LISTED].tolist(),
                "near_indices": ctx.pooled.local(np.array(nr, dtype=np.int64))[:MAX_LISTED].tolist(),
                "near_duplicate_radius": radius,
                "near_duplicates_expected_by_closeness": expected,
                "near_duplicates_counted": len(near_counted),
                "leakage_error_fraction": th.leakage_error_fraction,
                "hash": "blake2b-64 of rows rounded to 6 decimals; near: random-projection LSH",
            }
            pair = f"{names[later]} and {names[earlier]}"
            if total:
                sev = Severity.ERROR if share >= th.leakage_error_fraction else Severity.WARNING
                cmp = ">=" if sev is Severity.ERROR else "<"
                out.append(
                    _finding(
                        "data_leakage",
                        sev,
                        f"{total} of {n_held} {names[later]} samples ({share:.1%} {cmp} {th.leakage_error_fraction:.0%}) "
                        f"also occur in {names[earlier]}: {len(ex)} exact, {len(near_counted)} near duplicates"
                        + (
                            f" ({len(nr)} near pairs, as many as {names[earlier]}'s own closeness explains, not counted)"
                            if nr and chance_near
                            else ""
                        ),
                        names[later],
                        ev,
                        [("deduplicate_splits", f"drop the {total} shared samples from {names[later]}")],
                        confidence=1.0 if ex else 0.8,
                    )
                )
            else:
                note = (
                    f"; {len(nr)} near pairs, about the {expected:.1f} that {names[earlier]}'s own closeness predicts"
                    if nr
                    else ""
                )
                out.append(
                    _finding(
                        "data_leakage",
                        Severity.INFO,
                        f"no sample shared between {pair}{note}",
                        names[later],
                        ev,
                    )
                )
    for s, sp in enumerate(ctx.splits):
        near_extra = len(within_near[s])
        copies = int(within_exact[s])
        share = (copies + near_extra) / sp.n
        ev = {
            "exact_redundant_copies": copies,
            "rows_in_near_duplicate_pairs": near_extra,
            "share": share,
            "duplicate_fraction": th.duplicate_fraction,
            "near_duplicate_radius": radius,
        }
        if copies + near_extra == 0:
            continue
        sev = Severity.WARNING if share >= th.duplicate_fraction else Severity.INFO
        cmp = ">=" if sev is Severity.WARNING else "<"
        out.append(
            _finding(
                "data_leakage",
                sev,
                f"{sp.name} repeats itself: {copies} redundant exact copies and {near_extra} rows in near-duplicate pairs "
                f"({share:.1%} {cmp} {th.duplicate_fraction:.0%}), less diversity than its size suggests",
                sp.name,
                ev,
                [("deduplicate_splits", "keep one copy of each repeated sample")]
                if sev is Severity.WARNING
                else (),
            )
        )
    return out


# -------------------------------------------------------------------------------------------------- quality
def check_quality(ctx: _Context, label_signal: tuple[float, float, float] | None) -> list[Finding]:
    th, out = ctx.th, []
    for sp, st in zip(ctx.splits, ctx.stats):
        if st.rows_nonfinite:
            cols = np.flatnonzero(st.nonfinite)
            out.append(
                _finding(
                    "low_data_quality",
                    Severity.ERROR,
                    f"{st.rows_nonfinite} of {st.n} {sp.name} samples contain NaN/Inf values ({len(cols)} features)",
                    sp.name,
                    {
                        "rows_nonfinite": st.rows_nonfinite,
                        "features_nonfinite": cols[:MAX_LISTED].tolist(),
                        "values_nonfinite": int(st.nonfinite.sum()),
                    },
                    [("normalize_inputs", "impute or drop non-finite values before normalizing")],
                )
            )
    st, sp = ctx.stats[0], ctx.splits[0]
    std = st.std
    observed = st.count > 0
    const = np.flatnonzero(observed & (std == 0))
    frac = len(const) / max(len(std), 1)
    ev = {
        "constant_features": const[:MAX_LISTED].tolist(),
        "n_constant": len(const),
        "n_features": len(std),
        "constant_share": frac,
        "constant_feature_fraction": th.constant_feature_fraction,
    }
    if len(const):
        sev = Severity.WARNING if frac >= th.constant_feature_fraction else Severity.INFO
        cmp = ">=" if sev is Severity.WARNING else "<"
        out.append(
            _finding(
                "low_data_quality",
                sev,
                f"{len(const)} of {len(std)} training features are constant ({frac:.0%} {cmp} "
                f"{th.constant_feature_fraction:.0%}); they carry no information",
                "train",
                ev,
                [("normalize_inputs", "drop constant features")] if sev is Severity.WARNING else (),
            )
        )
    varying = std[observed & (std > 0)]
    if len(varying) and sp.n > 1:
        spread = float(varying.max() / varying.min())
        off = np.abs(st.mean[observed & (std > 0)]) / varying
        far = float(np.median(off))
        ev2 = {
            "std_min": float(varying.min()),
            "std_max": float(varying.max()),
            "std_spread": spread,
            "median_abs_mean_over_std": far,
            "unnormalized_scale_ratio": th.unnormalized_scale_ratio,
            "info_scale_ratio": 100.0,
            "info_mean_over_std": 3.0,
        }
        if spread >= th.unnormalized_scale_ratio:
            out.append(
                _finding(
                    "low_data_quality",
                    Severity.WARNING,
                    f"feature scales differ by a factor {spread:.3g} (>= {th.unnormalized_scale_ratio:g}): inputs are not "
                    f"normalized",
                    "train",
                    ev2,
                    [("normalize_inputs", "standardize each feature with training statistics")],
                )
            )
        elif spread >= 100.0 or far >= 3.0:
            why = [f"feature scales differ by {spread:.3g} (>= 100)"] if spread >= 100.0 else []
            why += [f"median |mean|/std is {far:.3g} (>= 3)"] if far >= 3.0 else []
            out.append(
                _finding(
                    "low_data_quality",
                    Severity.INFO,
                    f"inputs look unnormalized: {' and '.join(why)}; standardize them for gradient-based models",
                    "train",
                    ev2,
                    [("normalize_inputs", "standardize each feature with training statistics")],
                )
            )
    if label_signal is not None:
        agree, chance, kappa = label_signal
        ev3 = {
            "knn_agreement": agree,
            "chance_agreement": chance,
            "kappa": kappa,
            "k": 5,
            "min_label_signal": th.min_label_signal,
            "method": "share of 5 nearest neighbours (standardized inputs, training sample) with the same label",
        }
        if kappa < th.min_label_signal:
            out.append(
                _finding(
                    "low_data_quality",
                    Severity.WARNING,
                    f"inputs barely predict labels: nearest neighbours agree {agree:.1%} vs chance {chance:.1%} "
                    f"(kappa {kappa:.2f} < {th.min_label_signal:g}); the inputs look noisy",
                    "train",
                    ev3,
                    [
                        ("normalize_inputs", "scale features so noise-dominated ones do not swamp the rest"),
                        ("fix_labels", "check that labels belong to these inputs"),
                    ],
                )
            )
        else:
            out.append(
                _finding(
                    "low_data_quality",
                    Severity.INFO,
                    f"inputs carry label signal: nearest neighbours agree {agree:.1%} vs chance {chance:.1%} (kappa "
                    f"{kappa:.2f} >= {th.min_label_signal:g})",
                    "train",
                    ev3,
                )
            )
    return out


def _neighbours(ctx: _Context, limit: int = 3000) -> tuple[float, tuple[float, float, float] | None]:
    """Median distance to the nearest distinct neighbour (standardized) and the kNN label agreement."""
    from sklearn.neighbors import NearestNeighbors

    st = ctx.stats[0]
    rows = st.sample[:limit]
    y = ctx.splits[0].y[st.sample_index[:limit]]
    if len(rows) < 7:
        return 0.0, None
    z = np.nan_to_num((rows - st.mean) / _scale(st))
    dist, idx = NearestNeighbors(n_neighbors=6).fit(z).kneighbors(z)
    pos = dist[:, 1:][dist[:, 1:] > 1e-9]
    median = float(np.median(pos)) if pos.size else 0.0
    # the data's intrinsic dimension (TwoNN: the ratio of the 2nd to the 1st neighbour distance), which
    # decides how often random neighbours come close by chance
    r1, r2 = dist[:, 1], dist[:, 2]
    ok = (r1 > 1e-9) & (r2 > r1)
    ctx.signals["intrinsic_dimension"] = (
        float(ok.sum() / np.sum(np.log(r2[ok] / r1[ok]))) if ok.sum() >= 10 else float(z.shape[1])
    )
    agree = float(np.mean(y[idx[:, 1:]] == y[:, None]))
    p = np.bincount(y) / len(y)
    chance = float(np.sum(p**2))
    kappa = (agree - chance) / (1 - chance) if chance < 1 else 1.0
    return median, (agree, chance, kappa)


def _scale(st: SplitStats) -> np.ndarray:
    """Per-feature std, floored at a tenth of the median std so that near-constant features (image borders)
    do not turn tiny noise into large standardized distances."""
    s = st.std
    ok = (s > 0) & np.isfinite(s)
    floor = 0.1 * float(np.median(s[ok])) if ok.any() else 1.0
    return np.where(ok, np.maximum(s, floor), 1.0)


def _safe(name: str, fn: Callable[[], list[Finding]], skipped: list[SkippedCheck]) -> list[Finding]:
    """Run one criterion; a crash becomes a finding instead of hiding the other criteria."""
    try:
        return fn()
    except TrainmedicError:
        raise
    except Exception as e:  # pragma: no cover - exercised only by bugs
        return [
            _finding(
                "internal_error",
                Severity.WARNING,
                f"audit check {name} failed: {type(e).__name__}: {e}",
                None,
                {"check": name, "error": repr(e)},
            )
        ]


def audit(
    train: Any,
    val: Any = None,
    test: Any = None,
    outputs: Any = None,
    model: Any = None,
    num_classes: int | None = None,
    thresholds: dict[str, Any] | Thresholds | AuditThresholds | None = None,
    progress: bool = False,
    *,
    train_fn: Callable[[Any, Any], float] | None = None,
    label_check: LabelCheck = "auto",
    near_duplicates: bool = True,
    seed: int = 0,
    sample_rows: int = 5000,
    chunk_rows: int = 65_536,
    run: Any = None,
) -> Diagnosis:
    """Audit the splits of a classification dataset; return a :class:`Diagnosis` of ``source="audit"`` findings.

    Args:
        train, val, test: ``(X, y)`` arrays/tensors or torch Datasets; ``val``/``test`` optional.
        outputs: out-of-sample probabilities (or logits) for ``train``, shape (N, K); used for the label check.
        model: a torch module, to compare its parameter count with the number of training samples.
        num_classes: number of classes, when some are absent from the data.
        thresholds: overrides, by name (see :class:`AuditThresholds`).
        progress: show a rich progress bar.
        train_fn: ``train_fn(train_part, val) -> score`` (higher is better) for a learning curve on 25/50/100%.
        label_check: ``"auto"`` fits the cross-validated model on at most ``label_check_max_samples`` random
            samples (noise rate estimated on them, suspects listed among them); ``"full"`` on all; ``"off"``.
        near_duplicates: also look for near-duplicates (LSH), not only exact ones.
        seed: seeds every sample drawn, so audits repeat exactly.
        sample_rows: rows per split kept for the two-sample tests and the neighbour statistics.
        chunk_rows: rows read at once; bounds memory.
        run: a :class:`~trainmedic.watch.Run` (``tm.watch``) to store the audit with, so it joins that run's
            diagnosis and report.
    """
    if run is not None and not callable(getattr(run, "record", None)):
        raise TrainmedicError(f"`run` must be a trainmedic Run (from tm.watch); got {type(run).__name__}")
    if label_check not in ("auto", "full", "off"):
        raise TrainmedicError(f"`label_check` must be 'auto', 'full' or 'off'; got {label_check!r}")
    th = load_audit_thresholds(thresholds)
    splits = [as_split(train, "train")]
    for name, data in (("val", val), ("test", test)):
        if data is not None:
            splits.append(as_split(data, name))
    for sp in splits[1:]:
        if sp.sample_shape != splits[0].sample_shape:
            raise TrainmedicError(
                f"`{sp.name}` samples must have the training shape {splits[0].sample_shape}; got {sp.sample_shape}"
            )
    top = max(int(sp.y.max()) for sp in splits)
    if num_classes is not None:
        if top >= num_classes:
            raise TrainmedicError(f"labels must be below `num_classes`={num_classes}; got label {top}")
        classes = np.arange(num_classes)
    else:
        classes = np.unique(np.concatenate([sp.y for sp in splits]))
    diagnosis = Diagnosis(run="audit")
    with _Progress(progress) as bar:
        stats = []
        for i, sp in enumerate(splits):
            with bar.task(f"scan {sp.name}", sp.n) as tick:
                stats.append(scan_split(sp, sample_rows, seed + i, chunk_rows, tick))
        pooled = Pooled(splits)
        ctx = _Context(splits, stats, pooled, classes, th, seed, bar)
        for sp in splits:
            ctx.counts[sp.name] = np.array([int(np.sum(sp.y == c)) for c in classes], dtype=np.int64)
        ctx.exact = exact_groups(np.concatenate([st.hashes for st in stats]))
        ctx.signals["splits"] = {
            sp.name: {
                "n": sp.n,
                "sample_shape": list(sp.sample_shape),
                "class_counts": dict(zip(classes.tolist(), ctx.counts[sp.name].tolist())),
                "feature_mean": st.mean[:256].tolist(),
                "feature_std": st.std[:256].tolist(),
            }
            for sp, st in zip(splits, stats)
        }
        ctx.signals["thresholds"] = th.to_dict()
        radius, signal = _neighbours(ctx)
        # judge against chance: in d dimensions a share 1 - 2^(-f^d) of the points has a neighbour within f
        # times the median neighbour distance by chance alone (2-D data: 3% at f = 0.2), so in few dimensions
        # the factor shrinks until that share is `near_duplicate_chance`
        dim = max(1.0, float(ctx.signals.get("intrinsic_dimension", 1.0)))
        factor = min(th.near_duplicate_radius, (th.near_duplicate_chance / math.log(2)) ** (1.0 / dim))
        ctx.signals["near_duplicate_factor"] = factor
        radius *= factor
        near = None
        if near_duplicates and radius > 0:
            with bar.task("near-duplicates (LSH)", 3 * pooled.n) as tick:
                near = near_duplicate_pairs(
                    pooled,
                    stats[0].mean,
                    _scale(stats[0]),
                    radius,
                    np.concatenate([st.hashes for st in stats]),
                    seed=seed,
                    chunk_rows=chunk_rows,
                    tick=tick,
                )
        elif near_duplicates:
            ctx.skipped.append(
                SkippedCheck("data_leakage", "near-duplicates: no distinct neighbours to set a radius")
            )
        curve = (
            learning_curve(train_fn, train, val, seed=seed)
            if train_fn is not None and val is not None
            else None
        )
        if train_fn is not None and val is None:
            ctx.skipped.append(SkippedCheck("insufficient_data", "learning curve needs a `val` split"))
        found: list[Finding] = []
        found += _safe("sufficient", lambda: check_sufficient(ctx, model, curve), ctx.skipped)
        found += _safe("balanced", lambda: check_balanced(ctx), ctx.skipped)
        if len(splits) > 1:
            found += _safe("relevant", lambda: check_relevant(ctx), ctx.skipped)
        else:
            ctx.skipped.append(SkippedCheck("train_test_mismatch", "only a training split was given"))
        found += _safe("labels", lambda: check_labels(ctx, outputs, label_check), ctx.skipped)
        found += _safe("duplicates", lambda: check_duplicates(ctx, near, radius), ctx.skipped)
        found += _safe("quality", lambda: check_quality(ctx, signal), ctx.skipped)
    diagnosis.extend(found)
    diagnosis.signals = ctx.signals
    diagnosis.skipped = ctx.skipped
    if run is not None:
        run.record("audit", diagnosis.to_dict())
    return diagnosis
