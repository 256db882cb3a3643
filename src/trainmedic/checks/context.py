"""What a check sees: the stored run, read once and cached, plus the thresholds and a finding builder.

Checks never touch SQLite themselves; they ask the :class:`Context` for series, and build findings with
:meth:`Context.finding`, which stamps the thresholds the check declared into the evidence so every finding
reports the numbers it was judged against.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any

import numpy as np

from ..codes import PROBLEMS
from ..findings import Finding, RemedySuggestion, Severity
from ..settings import Thresholds
from ..store.reader import LayerSeries, RunReader, Series
from .registry import REQUIREMENTS, Check

HELDOUT_PREFERENCE = ("val", "valid", "validation", "dev", "test", "holdout", "eval")
RUNNING_SPLIT = "train_running"  # trainmedic.running.RUNNING_SPLIT
SCALE_MISMATCH = 4.0  # held-out / training logit spread that says the splits were not scaled alike
GAN_D_NAMES = ("loss_d", "d_loss", "discriminator/loss", "loss/d", "lossD")
GAN_G_NAMES = ("loss_g", "g_loss", "generator/loss", "loss/g", "lossG")
DIVERSITY_NAMES = ("diversity", "g_diversity", "generator/diversity", "sample_diversity")


def confidence(margin: float, evidence: float = 1.0) -> float:
    """0.5 at the threshold, toward 0.95 as the relative ``margin`` grows; scaled by the amount of
    ``evidence`` (0..1, e.g. epochs seen / epochs wanted)."""
    m = 0.0 if not math.isfinite(margin) else max(0.0, margin)
    base = 0.5 + 0.45 * math.tanh(2.0 * m)
    return float(base * (0.6 + 0.4 * max(0.0, min(1.0, evidence))))


# The top of the usual effective step (lr / (1 - momentum); lr for Adam-like optimizers) per optimizer: a run
# above it that plateaus low has not reached the data's floor, whatever its curves look like.
USUAL_STEP_TOP: dict[str, float] = {
    "sgd": 0.5,
    "adam": 0.02,
    "adamw": 0.02,
    "nadam": 0.02,
    "radam": 0.02,
    "rmsprop": 0.02,
    "adamax": 0.05,
}


# The top of the usual weight decay. Coupled L2 (added to the gradient: SGD, Adam, RMSprop, Adagrad…) is
# used at 1e-5–1e-2; from 0.05 on the penalty outweighs the data's gradient for most weights, so a plateau
# under it is the penalty's, not the data's. AdamW's decoupled decay shrinks by lr x wd a step: wd 0.01–0.3.
WEIGHT_DECAY_TOP: dict[str, float] = {"coupled": 0.05, "adamw": 1.0}


class Context:
    """Cached access to one run for the checks."""

    def __init__(self, reader: RunReader, thresholds: Thresholds) -> None:
        self.r = reader
        self.t = thresholds
        self.current: Check | None = None
        # the first step of a non-finite value or damaging explosion (set by diagnose once the root-cause
        # checks ran): per-layer statistics from then on describe the wreckage, not a separate problem
        self.break_step: int | None = None
        self._break_set = False

    def set_break(self, step: int | None) -> None:
        """Judge per-layer statistics only before ``step`` (once; ``None``: no break)."""
        if self._break_set:
            return
        self._break_set = True
        self.break_step = step
        if hasattr(self, "_layers"):
            self._layers.clear()

    # ---- building findings -----------------------------------------------------------------------
    def finding(
        self,
        severity: Severity | str,
        message: str,
        evidence: dict[str, Any],
        remedies: list[tuple[str, str]],
        confidence: float,
        *,
        code: str | None = None,
        step: int | None = None,
        epoch: int | None = None,
        layer: str | None = None,
        split: str | None = None,
    ) -> Finding:
        chk = self.current
        code = code or (chk.code if chk else "internal_error")
        ev = dict(evidence)
        if chk is not None and chk.thresholds:
            ev["thresholds"] = {name: getattr(self.t, name) for name in chk.thresholds}
        return Finding(
            code=code,
            severity=Severity.parse(severity),
            title=PROBLEMS[code].title if code in PROBLEMS else code,
            message=message,
            evidence=ev,
            remedies=[RemedySuggestion.of(c, why) for c, why in remedies],
            confidence=confidence,
            step=None if step is None else int(step),
            epoch=None if epoch is None else int(epoch),
            layer=layer,
            split=split,
            source="training",
        )

    # ---- requirements ----------------------------------------------------------------------------
    def missing(self, req: str) -> str | None:
        """``None`` when ``req`` is available, else why it is not."""
        ok = {
            "loss": lambda: self.loss is not None,
            "grad_norm": lambda: self.grad_norm is not None,
            "layer_grad_norm": lambda: self.layer("grad_norm").values.size > 0,
            "activations": lambda: any(self.layer(s).values.size > 0 for s in ("act_dead", "act_saturated")),
            "model_summary": lambda: bool(self.models),
            "train_eval": lambda: self.train_split is not None,
            "heldout_eval": lambda: self.heldout_split is not None,
            "heldout_loss": lambda: (
                self.heldout_split is not None and self.finite_eval(self.heldout_split, "loss").size > 0
            ),
            "confusion_matrix": lambda: (
                self.judged_split is not None and self.r.confusion_matrix(self.judged_split) is not None
            ),
            "class_counts": lambda: self.class_counts(self.train_split or self.judged_split) is not None,
            "gan_losses": lambda: self.gan_losses is not None,
            "diversity": lambda: self.diversity is not None,
            "rank_sync": lambda: bool(self.rank_syncs),
        }[req]()
        return None if ok else f"missing {REQUIREMENTS[req]}"

    @cached_property
    def rank_syncs(self) -> list[dict[str, Any]]:
        """The ``rank_sync`` records of a distributed run (per-rank numbers at each sync), oldest first."""
        return [{**rec["data"], "step": rec["step"]} for rec in self.r.records("rank_sync")]

    # ---- per-step signals ------------------------------------------------------------------------
    def _first_scalar(self, candidates: list[str]) -> Series | None:
        for name in candidates:
            if self.r.has_scalar(name):
                s = self.r.scalar(name)
                if len(s):
                    return s
        return None

    @cached_property
    def loss_name(self) -> str | None:
        names = self.r.scalar_names
        if "loss" in names:
            return "loss"
        # a GAN's adversarial losses (`loss_d`, `loss_g`) are not meant to fall: only the GAN checks read them
        gan = set(GAN_D_NAMES) | set(GAN_G_NAMES)
        cands = [n for n in names if n not in gan and (n.split("/")[-1] == "loss" or n.startswith("loss"))]
        return cands[0] if cands else None

    @cached_property
    def loss(self) -> Series | None:
        return self._first_scalar([self.loss_name]) if self.loss_name else None

    @cached_property
    def grad_norm_names(self) -> list[str]:
        return [n for n in self.r.scalar_names if n == "grad_norm" or n.endswith("/grad_norm")]

    @cached_property
    def grad_norm(self) -> Series | None:
        return self._first_scalar(self.grad_norm_names)

    def scalar(self, name: str) -> Series:
        return self.r.scalar(name)

    @cached_property
    def gan_losses(self) -> tuple[tuple[str, Series], tuple[str, Series]] | None:
        names = set(self.r.scalar_names)
        d = next((n for n in GAN_D_NAMES if n in names), None)
        g = next((n for n in GAN_G_NAMES if n in names), None)
        if d is None or g is None:
            return None
        return (d, self.r.scalar(d)), (g, self.r.scalar(g))

    @cached_property
    def diversity(self) -> tuple[str, Series] | None:
        names = set(self.r.scalar_names)
        n = next((n for n in DIVERSITY_NAMES if n in names), None)
        return (n, self.r.scalar(n)) if n else None

    # ---- per-layer signals -----------------------------------------------------------------------
    _layers: dict[str, LayerSeries]

    def layer(self, stat: str) -> LayerSeries:
        if not hasattr(self, "_layers"):
            self._layers = {}
        if stat not in self._layers:
            ls = self.r.layer_stat(stat)
            if self.break_step is not None and ls.values.size:
                keep = ls.steps < self.break_step
                if keep.any():  # with nothing before the break, the wreckage is all there is
                    ls = LayerSeries(ls.stat, ls.layers, ls.steps[keep], ls.values[keep])
            self._layers[stat] = ls
        return self._layers[stat]

    @cached_property
    def models(self) -> list[dict[str, Any]]:
        m = self.r.meta.get("models")
        return [x for x in m if isinstance(x, dict)] if isinstance(m, list) else []

    @cached_property
    def step_too_large(self) -> str | None:
        """The effective step ``lr / (1 - momentum)`` (``lr`` for Adam-like optimizers) of a recorded
        optimizer, where it is above the top of its optimizer's usual range (:data:`USUAL_STEP_TOP`); None
        when in range or unknown. The largest learning rate the run used counts (a warm-up starts low)."""
        opts = self.r.meta.get("optimizers")
        if not isinstance(opts, list):
            return None
        lr_series = self.r.scalar("lr") if self.r.has_scalar("lr") else None
        run_lr = (
            float(np.nanmax(lr_series.values))
            if lr_series is not None and lr_series.values.size and np.isfinite(lr_series.values).any()
            else None
        )
        for o in opts:
            if not isinstance(o, dict):
                continue
            kind = str(o.get("type", "")).lower()
            top = USUAL_STEP_TOP.get(kind)
            groups = o.get("param_groups")
            if top is None or not isinstance(groups, list) or not groups or not isinstance(groups[0], dict):
                continue
            g = groups[0]
            lr = g.get("lr")
            if not isinstance(lr, (int, float)) or isinstance(lr, bool):
                continue
            lr = float(run_lr) if run_lr is not None and len(opts) == 1 else float(lr)
            m = g.get("momentum") if kind in ("sgd", "rmsprop") else 0.0
            m = float(m) if isinstance(m, (int, float)) and not isinstance(m, bool) else 0.0
            step = lr / (1.0 - min(max(m, 0.0), 0.999))
            if step > top * (1.0 + 1e-9):  # lr 0.05 at momentum 0.9 is 0.5, not 0.5000000000000001
                what = f"lr {lr:g}" + (f" with momentum {m:g} (effective step {step:.3g})" if m else "")
                return f"{o.get('type')} at {what} is above its usual range (up to {top:g})"
        return None

    @cached_property
    def weight_decay_too_large(self) -> str | None:
        """A recorded optimizer's weight decay above the top of its usual range (:data:`WEIGHT_DECAY_TOP`:
        coupled L2 from 0.05, AdamW's decoupled decay from 1.0); None when in range or unknown."""
        opts = self.r.meta.get("optimizers")
        if not isinstance(opts, list):
            return None
        for o in opts:
            groups = o.get("param_groups") if isinstance(o, dict) else None
            if not isinstance(groups, list):
                continue
            kind = str(o.get("type", "")).lower()
            top = WEIGHT_DECAY_TOP["adamw" if kind == "adamw" else "coupled"]
            for g in groups:
                wd = g.get("weight_decay") if isinstance(g, dict) else None
                if isinstance(wd, (int, float)) and not isinstance(wd, bool) and float(wd) >= top:
                    return (
                        f"{o.get('type')} weight_decay {float(wd):g} is above its usual range (below {top:g})"
                    )
        return None

    @cached_property
    def layer_info(self) -> dict[str, dict[str, Any]]:
        return {lay["name"]: lay for m in self.models for lay in m.get("layers", [])}

    @cached_property
    def total_params(self) -> int:
        return int(sum(int(m.get("trainable_params", m.get("total_params", 0)) or 0) for m in self.models))

    # ---- evaluations -----------------------------------------------------------------------------
    @cached_property
    def splits(self) -> list[str]:
        return [s for s in self.r.splits if "accuracy" in self.r.eval_names(s)]

    @cached_property
    def train_split(self) -> str | None:
        """``train`` (a clean pass, run.evaluate), else ``train_running`` (the batches' running metrics of
        run.log(outputs=, targets=), which lag a model that is still learning)."""
        if "train" in self.splits:
            return "train"
        return RUNNING_SPLIT if RUNNING_SPLIT in self.splits else None

    @cached_property
    def heldout_split(self) -> str | None:
        for name in HELDOUT_PREFERENCE:
            if name in self.splits:
                return name
        others = [s for s in self.splits if s not in ("train", RUNNING_SPLIT)]
        return others[0] if others else None

    @cached_property
    def judged_split(self) -> str | None:
        """Where performance is judged: the held-out split, else train."""
        return self.heldout_split or self.train_split

    @cached_property
    def output_scale_mismatch(self) -> dict[str, Any] | None:
        """The held-out split's logits spread SCALE_MISMATCH x or more wider than the training split's (clean pass,
        else the running metrics) at the same epochs: its inputs did not go through the training inputs'
        scaling. Judged on the epochs both recorded (``output_scale``, from epoch 1 on when the training split is
        the running metrics, whose first epoch averages a model still near its initial scale): at least 2, the
        median ratio >= SCALE_MISMATCH and every ratio >= SCALE_MISMATCH / 2. With harm only: the held-out
        accuracy ends below the training accuracy by max(3 points, 2 standard errors of a difference)."""
        tr, ho = self.train_split, self.heldout_split
        if tr is None or ho is None:
            return None
        a, b = self.r.eval_series(tr, "output_scale"), self.r.eval_series(ho, "output_scale")
        if not len(a) or not len(b):
            return None
        first = 1 if tr == RUNNING_SPLIT else 0
        sa = {int(e): float(v) for e, v in zip(a.steps, a.values) if e >= first and np.isfinite(v) and v > 0}
        sb = {int(e): float(v) for e, v in zip(b.steps, b.values) if np.isfinite(v)}
        common = sorted(set(sa) & set(sb))
        if len(common) < 2:
            return None
        ratios = np.array([sb[e] / sa[e] for e in common])
        med = float(np.median(ratios))
        if not (med >= SCALE_MISMATCH and float(ratios.min()) >= SCALE_MISMATCH / 2):
            return None
        acc_tr = self.finite_eval(tr, "accuracy")
        acc_ho = self.finite_eval(ho, "accuracy")
        if not acc_tr.size or not acc_ho.size:
            return None
        gap = float(acc_tr[-1] - acc_ho[-1])
        se = self.gap_se(float(acc_tr[-1]), tr, float(acc_ho[-1]), ho)
        if gap < max(0.03, 2.0 * se):
            return None
        return {
            "train_split": tr,
            "split": ho,
            "ratio": med,
            "min_ratio": float(ratios.min()),
            "epochs": common,
            "train_output_scale": float(np.median([sa[e] for e in common])),
            "heldout_output_scale": float(np.median([sb[e] for e in common])),
            "train_accuracy": float(acc_tr[-1]),
            "heldout_accuracy": float(acc_ho[-1]),
            "gap": gap,
            "gap_standard_error": se,
        }

    @cached_property
    def restored_epoch(self) -> int | None:
        """The epoch whose weights the run ended with when training put back an earlier best state (a
        ``fit`` record's ``restored_epoch``, or a ``stop_restore_best`` treatment); None otherwise. The checks
        judge the model the run returned, so evaluations after this epoch are not part of the verdict."""
        rec = self.r.record("fit")
        if isinstance(rec, dict) and rec.get("restored_epoch") is not None:
            return int(rec["restored_epoch"])
        epoch: int | None = None
        for e in self.r.events("treatment"):
            d = e.get("data") or {}
            if d.get("action") == "stop_restore_best" and d.get("best_epoch") is not None:
                epoch = int(d["best_epoch"])
        return epoch

    def eval(self, split: str, name: str) -> Series:
        """Per-epoch ``name`` of ``split``, up to the restored epoch when the best weights were put back."""
        s = self.r.eval_series(split, name)
        end = self.restored_epoch
        if end is None or not len(s) or s.steps[-1] <= end:
            return s
        keep = s.steps <= end
        return Series(s.steps[keep], s.values[keep]) if keep.any() else s

    def confusion_matrix(self, split: str, epoch: int | None = None) -> np.ndarray | None:
        """The confusion matrix of ``split`` at ``epoch`` (default: the judged end — the restored epoch, else
        the last)."""
        if epoch is None and self.restored_epoch is not None:
            cm = self.r.confusion_matrix(split, self.restored_epoch)
            if cm is not None:
                return cm
        return self.r.confusion_matrix(split, epoch)

    def finite_eval(self, split: str, name: str) -> np.ndarray:
        v = self.eval(split, name).values
        return v[np.isfinite(v)]

    def best_and_last_epoch(self, split: str) -> tuple[int, int]:
        """The best epoch of ``split`` (lowest loss when recorded, else highest accuracy) and the last."""
        acc = self.eval(split, "accuracy")
        last = int(acc.steps[-1])
        loss = self.eval(split, "loss")
        if len(loss) and np.isfinite(loss.values).any():
            return int(
                loss.steps[int(np.nanargmin(np.where(np.isfinite(loss.values), loss.values, np.nan)))]
            ), last
        return int(acc.steps[int(np.nanargmax(acc.values))]), last

    def value_at(self, split: str, name: str, epoch: int) -> float:
        s = self.eval(split, name)
        idx = np.flatnonzero(s.steps == epoch)
        return float(s.values[idx[-1]]) if idx.size else float("nan")

    def class_counts(self, split: str | None) -> np.ndarray | None:
        if split is None:
            return None
        meta = self.r.meta.get(f"split/{split}")
        if isinstance(meta, dict) and meta.get("class_counts"):
            return np.asarray(meta["class_counts"], dtype=np.int64)
        cm = self.r.confusion_matrix(split)
        return None if cm is None else cm.sum(axis=1)

    def n_samples(self, split: str | None) -> int:
        """Samples in ``split`` (from its class counts / confusion matrix); 0 when unknown."""
        c = self.class_counts(split)
        return int(c.sum()) if c is not None else 0

    def accuracy_se(self, p: float, split: str | None) -> float:
        """Standard error of an accuracy ``p`` measured on ``split`` (binomial; never below the
        resolution of one sample). NaN when the split size is unknown."""
        n = self.n_samples(split)
        if n <= 0 or not math.isfinite(p):
            return float("nan")
        return math.sqrt(max(p * (1.0 - p), 1.0 / n) / n)

    def gap_se(self, a: float, split_a: str | None, b: float, split_b: str | None) -> float:
        """Standard error of the difference of two accuracies measured on two splits (an unknown split
        size counts as no noise)."""
        se_a = self.accuracy_se(a, split_a)
        se_b = self.accuracy_se(b, split_b)
        return math.sqrt(
            (se_a if math.isfinite(se_a) else 0.0) ** 2 + (se_b if math.isfinite(se_b) else 0.0) ** 2
        )

    @cached_property
    def n_classes(self) -> int:
        sp = self.train_split or self.judged_split
        c = self.class_counts(sp)
        return int(len(c)) if c is not None else 0

    @cached_property
    def learned(self) -> bool | None:
        """Did the model learn? True when its best accuracy (training split, else held-out) reached
        `underfit_train_accuracy` or clearly beat chance; False when it stayed below both; None when no
        accuracy was recorded. Used to tell a converged plateau (a floor) from a stall."""
        sp = self.train_split or self.judged_split
        if sp is None:
            return None
        acc = self.finite_eval(sp, "accuracy")
        if acc.size == 0:
            return None
        best = float(acc.max())
        if best >= self.t.underfit_train_accuracy:
            return True
        counts = self.class_counts(sp)
        if counts is None or counts.sum() == 0:
            return False
        # chance: always predicting the most frequent class
        chance = float(counts.max() / counts.sum())
        se = self.accuracy_se(chance, sp)
        return bool(best >= chance + max(0.25 * (1.0 - chance), 3 * (se if math.isfinite(se) else 0.0)))

    @cached_property
    def diverged(self) -> bool:
        """The training loss went non-finite: later verdicts about fit describe a broken model."""
        return self.loss is not None and not bool(np.isfinite(self.loss.values).all())
