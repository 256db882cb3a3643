"""``tm.autofix``: train → diagnose → apply the best-ranked remedy as a config change → retrain → keep or roll back.

Why a config loop and not in-place surgery: every remedy of the catalogue is a hyperparameter of
``train_fn(config, run)`` (see :class:`~trainmedic.remedies.fit.FitConfig`), so a trial is a clean, seeded,
reproducible training run, and a rollback is exact by construction — the kept config and its model, saved
atomically under ``run_root/best/``, never change until a better trial replaces them. The audit log
(``run_root/autofix.json``, rewritten atomically after every trial, and ``run.record("autofix", ...)`` in the
best trial's run) says which finding led to which change, and what it did to the metric and the diagnosis.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..checks.context import USUAL_STEP_TOP
from ..errors import TrainmedicError
from ..findings import Diagnosis, Finding, RemedySuggestion, Severity, _jsonable
from ..settings import Thresholds, load_thresholds

SEQUENCE_ARCHS = ("lstm", "gru", "rnn", "transformer")
# How much a problem's remedies count when choosing the next trial: causes before symptoms.
CAUSE_WEIGHT: dict[str, float] = {
    "nonfinite": 4.0,
    "exploding_gradient": 4.0,
    "bad_initialization": 3.0,
    "vanishing_gradient": 3.0,
    "gradient_masking": 3.0,
    "inefficient_learning": 2.0,
    "data_imbalance": 2.0,
    "overfitting": 2.0,
    "underfitting": 1.5,
    "train_test_mismatch": 1.5,
    "insufficient_data": 1.5,
    "low_data_quality": 1.5,
}


# ---- config tracking -----------------------------------------------------------------------------
class TrackingConfig(dict):  # type: ignore[type-arg]
    """A config dict that remembers which keys ``train_fn`` looked at: a remedy may only change keys the
    training code reads (or that the config already holds)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def __getitem__(self, key: Any) -> Any:
        self.read.add(str(key))
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        self.read.add(str(key))
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)


# ---- remedy -> config change ---------------------------------------------------------------------
@dataclass
class _Ctx:
    cfg: dict[str, Any]  # effective config: train_fn defaults <- current config
    run_dir: Path
    known: set[str]
    diag: Diagnosis | None = None  # the diagnosis the change answers (its evidence sizes some changes)
    model_saved: bool = False  # the current best model is on disk (``best/model.pt``): it can be continued


def _off(v: Any) -> bool:
    return v is None or v is False or v in ("none", "default", 0, 0.0)


def _lr(ctx: _Ctx) -> float:
    lr = ctx.cfg.get("lr")
    if lr is None:
        return {"sgd": 1e-2, "rmsprop": 1e-2}.get(str(ctx.cfg.get("optimizer", "adam")), 1e-3)
    return float(lr)


def _step_factor(cfg: Mapping[str, Any]) -> float:
    """``1 / (1 - momentum)`` for SGD/RMSprop with momentum (heavy-ball momentum multiplies the step of a
    steady gradient by this), 1 for Adam-like optimizers (their moments are normalized)."""
    if str(cfg.get("optimizer", "adam")) not in ("sgd", "rmsprop"):
        return 1.0
    m = cfg.get("momentum") or 0.0
    m = float(m) if isinstance(m, (int, float)) else 0.0
    return 1.0 / (1.0 - min(max(m, 0.0), 0.999))


def effective_step(cfg: Mapping[str, Any]) -> float | None:
    """The effective step size ``lr / (1 - momentum)`` (``lr`` for Adam); None without a numeric ``lr``."""
    lr = cfg.get("lr")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool):
        return None
    return float(lr) * _step_factor(cfg)


def _sig(x: float) -> float:
    return float(f"{x:.3g}")


STEP_TARGET = 0.2  # an lr brought back into range aims at this fraction of the range's top (effective step)


def _lower_lr(ctx: _Ctx, factor: float = 10.0) -> dict[str, Any] | None:
    """``lr / factor``; when the effective step ``lr / (1 - momentum)`` would still be above the usual range
    of its optimizer (lr 3.0 under momentum 0.9 → 0.3 is still a step of 3.0), straight back into it."""
    lr, k = _lr(ctx), _step_factor(ctx.cfg)
    new = lr / factor
    rng = LR_RANGE.get(str(ctx.cfg.get("optimizer", "adam")))
    if rng is not None and new * k > rng[1]:
        new = STEP_TARGET * rng[1] / k
    return {"lr": _sig(new)}


def _raise_lr(ctx: _Ctx, factor: float = 10.0) -> dict[str, Any] | None:
    """``lr × factor``, at most to the top of the optimizer's usual range (effective step)."""
    lr, k = _lr(ctx), _step_factor(ctx.cfg)
    rng = LR_RANGE.get(str(ctx.cfg.get("optimizer", "adam")))
    new = lr * factor
    if rng is not None:
        new = min(new, rng[1] / k)
    if lr >= 1.0 or new <= lr * 1.01:
        return None
    return {"lr": _sig(new)}


def _grad_clip(ctx: _Ctx) -> dict[str, Any] | None:
    if not _off(ctx.cfg.get("grad_clip")):
        return None
    from ..store.reader import RunReader
    from .clipping import clip_norm_from_history

    with RunReader(ctx.run_dir) as r:
        norms = r.scalar("grad_norm").values
    try:
        return {"grad_clip": round(clip_norm_from_history(norms), 6)}
    except TrainmedicError:
        return None


def _dropout(ctx: _Ctx) -> dict[str, Any] | None:
    p = float(ctx.cfg.get("dropout") or 0.0)
    return None if p >= 0.5 else {"dropout": round(min(0.5, p + 0.2), 2)}


def _weight_decay(ctx: _Ctx) -> dict[str, Any] | None:
    wd = float(ctx.cfg.get("weight_decay") or 0.0)
    return None if wd >= 1e-2 else {"weight_decay": 1e-4 if wd == 0 else wd * 10}


def _early_stopping(ctx: _Ctx) -> dict[str, Any] | None:
    if not _off(ctx.cfg.get("early_stopping")):
        return None
    change: dict[str, Any] = {"early_stopping": True}
    if "restore_best" in ctx.known:
        change["restore_best"] = True
    return change


MIN_USEFUL_WIDTH = 64  # larger_model: a narrower hidden layer is a bottleneck; jump straight to this


def _larger(ctx: _Ctx) -> dict[str, Any] | None:
    """Double the width, or jump to :data:`MIN_USEFUL_WIDTH` from a bottleneck (doubling 2 → 4 → 8 … would
    spend the whole budget on one remedy)."""
    w = ctx.cfg.get("width")
    if not isinstance(w, int):
        return None
    new = min(4096, max(2 * w, MIN_USEFUL_WIDTH))
    return None if new == w else {"width": new}


def _smaller(ctx: _Ctx) -> dict[str, Any] | None:
    """Halve the width; when the diagnosis measured too many parameters per sample, shrink the width in
    proportion so the model lands under the threshold in one trial (parameters grow at least linearly
    with width)."""
    w = ctx.cfg.get("width")
    if not isinstance(w, int):
        return None
    factor = 0.5
    for f in ctx.diag.findings if ctx.diag is not None else []:
        ev = f.evidence or {}
        pps, thr = ev.get("params_per_sample"), (ev.get("thresholds") or {}).get("max_params_per_sample")
        if f.code != "insufficient_data" or not isinstance(pps, (int, float)):
            continue
        if isinstance(thr, (int, float)) and pps > thr > 0:
            factor = min(factor, max(0.25, 0.8 * thr / pps))  # at most 4x smaller per trial
    new = max(4, int(round(w * factor)))
    return None if new >= w else {"width": new}


def _unless_set(key: str, value: Any) -> Callable[[_Ctx], dict[str, Any] | None]:
    def rule(ctx: _Ctx) -> dict[str, Any] | None:
        return {key: value} if _off(ctx.cfg.get(key)) else None

    return rule


def _unless_equal(
    key: str, value: Any, also: tuple[Any, ...] = ()
) -> Callable[[_Ctx], dict[str, Any] | None]:
    def rule(ctx: _Ctx) -> dict[str, Any] | None:
        return None if ctx.cfg.get(key) == value or ctx.cfg.get(key) in also else {key: value}

    return rule


def _norm(ctx: _Ctx) -> dict[str, Any] | None:
    if not _off(ctx.cfg.get("norm")):
        return None
    return {"norm": "layer" if str(ctx.cfg.get("arch", "")).lower() in SEQUENCE_ARCHS else "batch"}


def _momentum(ctx: _Ctx) -> dict[str, Any] | None:
    if (
        str(ctx.cfg.get("optimizer", "adam")) not in ("sgd", "rmsprop")
        or float(ctx.cfg.get("momentum") or 0) > 0
    ):
        return None
    return {"momentum": 0.9}


ADAM_LR = (
    3e-3  # the lr switch_optimizer pairs with Adam (upper end of its usual range: small models, few epochs)
)


def _switch_optimizer(ctx: _Ctx) -> dict[str, Any] | None:
    if str(ctx.cfg.get("optimizer", "adam")) in ("adam", "adamw"):
        return None
    return {"optimizer": "adam", "lr": ADAM_LR}


def _normalize_inputs(ctx: _Ctx) -> dict[str, Any] | None:
    return None if ctx.cfg.get("normalize_inputs") is True else {"normalize_inputs": True}


CONTINUE = (
    "<best model>"  # resume_from placeholder: the loop puts a copy of the best model's checkpoint there
)


def _train_longer(ctx: _Ctx) -> dict[str, Any] | None:
    """As many epochs again. When the training code takes ``resume_from`` and the best model is on disk, the
    trial *continues* that model for them (half the cost of retraining twice as long), else it retrains
    with twice the epochs."""
    epochs = int(ctx.cfg.get("epochs", 10))
    if epochs >= 200:
        return None
    if "resume_from" in ctx.known and ctx.model_saved:
        return {"epochs": epochs, "resume_from": CONTINUE}
    return {"epochs": epochs * 2}


REMEDY_CHANGES: dict[str, Callable[[_Ctx], dict[str, Any] | None]] = {
    "lower_learning_rate": _lower_lr,
    "raise_learning_rate": _raise_lr,
    "gradient_clipping": _grad_clip,
    "non_saturating_activation": _unless_equal("activation", "leaky_relu", ("silu", "gelu", "elu", "mish")),
    "he_init": _unless_equal("init", "he"),
    "xavier_init": _unless_equal("init", "xavier"),
    "batch_norm": _norm,
    "add_dropout": _dropout,
    "weight_decay": _weight_decay,
    "early_stopping": _early_stopping,
    "restore_best_checkpoint": _early_stopping,
    "class_weights": _unless_set("class_weights", True),
    "oversample": _unless_set("sampler", "oversample"),
    "undersample": _unless_set("sampler", "undersample"),
    "add_momentum": _momentum,
    "switch_optimizer": _switch_optimizer,
    "larger_model": _larger,
    "smaller_model": _smaller,
    "train_longer": lambda c: _train_longer(c),
    "data_augmentation": _unless_set("augmentation", True),
    "lr_schedule": _unless_set("lr_schedule", "plateau"),
    "normalize_inputs": _normalize_inputs,
}


# ---- results -------------------------------------------------------------------------------------
@dataclass
class Trial:
    """One training run of the loop (index 0 is the baseline)."""

    index: int
    remedy: str | None
    finding: str | None  # the problem code whose remedy was tried
    config_change: dict[str, list[Any]]  # key -> [old, new]
    metric_before: float | None
    metric_after: float | None
    kept: bool
    codes_before: list[str]
    codes_after: list[str]
    seconds: float
    run_dir: str
    error: str | None = None
    stop_reason: str | None = None
    elapsed: float | None = None  # seconds since autofix started, when this trial was trained and judged
    reason: str | None = None  # a polishing move: the headroom evidence that called for it
    margin: float | None = None  # the improvement over the best it had to beat to be kept (split noise)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self.__dict__)  # type: ignore[no-any-return]


@dataclass
class AutofixResult:
    """What autofix did; ``to_dict()`` is the audit log."""

    metric: str
    mode: str
    trials: list[Trial]
    config: dict[str, Any]
    initial_config: dict[str, Any]
    best_model: nn.Module | None
    best_metric: float | None
    baseline_metric: float | None
    best_trial: int
    healthy: bool
    codes: list[str]
    run_root: Path
    seconds: float
    seconds_to_best: float
    stop_reason: str
    diagnosis: Diagnosis | None = field(default=None, repr=False)
    final_choice: str | None = None  # why the final model is not the last kept one (see _final_pick)

    @property
    def gain(self) -> float | None:
        """Improvement of the metric over the baseline (positive = better, for either direction)."""
        if (
            self.best_metric is None
            or self.baseline_metric is None
            or not math.isfinite(self.baseline_metric)
        ):
            return None
        d = self.best_metric - self.baseline_metric
        return d if self.mode == "max" else -d

    @property
    def best_model_path(self) -> Path:
        return self.run_root / "best" / "model.pt"

    @property
    def final_run_dir(self) -> Path:
        return Path(self.trials[self.best_trial].run_dir)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(  # type: ignore[no-any-return]
            {
                "schema_version": 1,
                "metric": self.metric,
                "mode": self.mode,
                "baseline_metric": self.baseline_metric,
                "best_metric": self.best_metric,
                "gain": self.gain,
                "best_trial": self.best_trial,
                "healthy": self.healthy,
                "codes": self.codes,
                "initial_config": self.initial_config,
                "config": self.config,
                "seconds": self.seconds,
                "seconds_to_best": self.seconds_to_best,
                "stop_reason": self.stop_reason,
                "final_choice": self.final_choice,
                "best_model": str(self.best_model_path),
                "trials": [t.to_dict() for t in self.trials],
            }
        )

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def summary(self) -> str:
        lines = [
            f"autofix: {self.metric} {_fmt(self.baseline_metric)} -> {_fmt(self.best_metric)} in {len(self.trials)} run(s), {self.seconds:.1f}s ({self.stop_reason})"
        ]
        for t in self.trials:
            change = (
                ", ".join(f"{k} {_fmt(v[0])}->{_fmt(v[1])}" for k, v in t.config_change.items()) or "baseline"
            )
            verdict = "kept" if t.kept else ("failed: " + t.error if t.error else "rolled back")
            lines.append(
                f"  #{t.index} {t.remedy or '-'} ({change}): {_fmt(t.metric_after)} [{verdict}] problems {', '.join(t.codes_after) or 'none'}"
            )
        if self.final_choice:
            lines.append(f"  final model: {self.final_choice}")
        return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


# ---- helpers -------------------------------------------------------------------------------------
def _atomic_write_text(path: Path, text: str, durable: bool = True) -> None:
    """Write via a temporary file and a rename: readers never see half a file. ``durable`` also fsyncs
    (survives power loss); the audit log written after every trial skips that until its final write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _parse_metric(metric: str) -> tuple[str, str, str]:
    if "_" not in metric:
        raise TrainmedicError(
            f"`metric` must be '<split>_<name>' such as 'val_accuracy' or 'val_loss'; got {metric!r}"
        )
    split, name = metric.split("_", 1)
    mode = "min" if "loss" in name else "max"
    return split, name, mode


@dataclass
class _View:
    """What the loop needs from a finished run, read in one pass (opening SQLite costs more than a short
    trial's epoch): the judged ``value``, the per-epoch ``curve`` of the metric, held-out accuracy."""

    value: float | None
    curve: dict[int, float]
    accuracy: np.ndarray
    n_samples: int = 0  # samples of the judged split (its last confusion matrix); 0 when unknown
    train_accuracy: float | None = None  # last evaluated training accuracy

    def noise(self, value: float | None = None) -> float:
        """Standard error of an accuracy on the judged split (binomial, never below one sample's
        resolution, as the diagnosis judges it); 0 when the split size is unknown."""
        p = self.value if value is None else value
        if self.n_samples <= 0 or p is None or not math.isfinite(p) or not 0.0 <= p <= 1.0:
            return 0.0
        return math.sqrt(max(p * (1.0 - p), 1.0 / self.n_samples) / self.n_samples)


def _read_view(run_dir: str | os.PathLike[str], metric: str) -> _View:
    from ..store.reader import RunReader

    split, name, _ = _parse_metric(metric)
    with RunReader(run_dir) as r:
        s = r.eval_series(split, name)
        acc = r.eval_series(split, "accuracy").values
        tr = r.eval_series("train", "accuracy").values
        tr = tr[np.isfinite(tr)]
        train_acc = float(tr[-1]) if tr.size else None
        n = 0
        recs = r.records("classification", split)
        if recs:
            cm = np.asarray((recs[-1].get("data") or {}).get("confusion_matrix") or [], dtype=float)
            n = int(cm.sum()) if cm.ndim == 2 and np.isfinite(cm).all() else 0
        if not len(s):
            return _View(None, {}, acc[np.isfinite(acc)], n, train_acc)
        epoch: int | None = None
        fit_rec = r.record("fit")
        if isinstance(fit_rec, dict) and fit_rec.get("restored_epoch") is not None:
            epoch = int(fit_rec["restored_epoch"])
        else:
            for e in r.events("treatment"):
                d = e.get("data") or {}
                if d.get("action") == "stop_restore_best" and d.get("best_epoch") is not None:
                    epoch = int(d["best_epoch"])
        idx = np.flatnonzero(s.steps == epoch) if epoch is not None else np.zeros(0, dtype=np.int64)
        v = float(s.values[idx[-1]] if idx.size else s.values[-1])
    curve = {int(e): float(x) for e, x in zip(s.steps, s.values, strict=False) if math.isfinite(float(x))}
    return _View(v if math.isfinite(v) else None, curve, acc[np.isfinite(acc)], n, train_acc)


def _recorded_optimizer(run_dir: Path) -> dict[str, Any]:
    """``optimizer`` (``sgd``/``adam``/…) and ``momentum`` of the first optimizer a run recorded: facts
    a training script's command line may not state, which size the lr remedies (effective step)."""
    from ..store.reader import RunReader

    try:
        with RunReader(run_dir) as r:
            opts = r.meta.get("optimizers") or []
    except Exception:
        return {}
    if not opts or not isinstance(opts[0], dict):
        return {}
    out: dict[str, Any] = {"optimizer": str(opts[0].get("type", "")).lower()}
    groups = opts[0].get("param_groups") or []
    m = groups[0].get("momentum") if groups and isinstance(groups[0], dict) else None
    if isinstance(m, (int, float)):
        out["momentum"] = float(m)
    return out


def run_metric(run_dir: str | os.PathLike[str], metric: str = "val_accuracy") -> float | None:
    """``metric`` of the model a run ended with: the restored epoch when the best weights were put back
    (``tm.fit`` early stopping, treatment), else the last evaluated epoch. None when never evaluated or NaN."""
    return _read_view(run_dir, metric).value


def _better(a: float | None, b: float | None, mode: str, margin: float = 0.0) -> bool:
    """``a`` beats ``b`` by more than ``margin`` (None is worst)."""
    if a is None:
        return False
    if b is None:
        return True
    return a > b + margin if mode == "max" else a < b - margin


def _diagnose(run_dir: Path, thresholds: Thresholds, diagnose: Callable[..., Diagnosis] | None) -> Diagnosis:
    if diagnose is not None:
        return diagnose(run_dir)
    try:
        from ..checks import diagnose as checks_diagnose  # type: ignore[attr-defined]
    except ImportError:
        return basic_diagnose(run_dir, thresholds)
    return checks_diagnose(run_dir, thresholds=thresholds)  # type: ignore[no-any-return]


# ---- cutting hopeless trials ---------------------------------------------------------------------
# Causes that keep a model at chance however long it trains (a stalled loss included).
ROOT_CAUSES = frozenset(
    {
        "bad_initialization",
        "vanishing_gradient",
        "gradient_masking",
        "exploding_gradient",
        "nonfinite",
        "inefficient_learning",
    }
)
POLISH_ROUNDS = 2  # at most this many train_longer rounds on a healthy, unconverged model
CHANCE_MARGIN = 0.05  # "learned nothing": held-out accuracy at most chance (1 / classes) + this


class _TrialCut:
    """Ends a run early, from a third of its epochs on, when finishing it cannot change what autofix does:

    * *worse* (retrials): its held-out metric is worse by more than ``margin`` than both the best run's
      at the same epoch and the best run's final value — it cannot be kept (a trial is kept only when it
      beats the best);
    * *overfitting settled* (any run): the ``overfitting`` check's held-out-loss rise rule already holds
      (the run's remaining epochs only make its model worse; the diagnosis of the cut run says so);
    * *hopeless* (the baseline only — the run presumed faulty; accuracy only): held-out accuracy is at
      most chance + :data:`CHANCE_MARGIN` and a diagnosis of the run so far (made once) already names a
      root cause (:data:`ROOT_CAUSES`) — its remedy is the next trial. Its metric is then the cut epoch's.
      Retrials are not judged this way: a remedy (a lower lr) may start at chance and recover.

    Plugged in as the run's epoch hook (``run.treatment``), chained to any treatment already there."""

    def __init__(
        self,
        split: str,
        name: str,
        mode: str,
        reference: dict[int, float] | None,
        final: float | None,
        epochs: int,
        margin: float,
        inner: Any = None,
        diagnose: Callable[[], Diagnosis] | None = None,
        overfit_rise: float | None = None,
    ) -> None:
        self.split, self.name, self.mode = split, name, mode
        self.reference, self.final, self.margin, self.inner = reference or {}, final, margin, inner
        self.from_epoch = max(1, math.ceil(epochs / 3)) - 1
        self.diagnose = diagnose
        self.overfit_rise = overfit_rise
        self.losses: dict[str, dict[int, float]] = {}
        self.reason: str | None = None
        self.kind: str | None = None  # "worse" | "overfitting" | "hopeless"

    def before_step(self, run: Any, probe: Any, step: int) -> None:
        if self.inner is not None:
            self.inner.before_step(run, probe, step)

    def after_step(self, run: Any, probe: Any, step: int) -> None:
        if self.inner is not None:
            self.inner.after_step(run, probe, step)

    def _worse(self, v: float, ref: float) -> bool:
        return v < ref - self.margin if self.mode == "max" else v > ref * (1 + self.margin)

    def after_evaluate(
        self, run: Any, split: str, epoch: int, result: dict[str, Any], loss: float | None
    ) -> None:
        if self.inner is not None:
            self.inner.after_evaluate(run, split, epoch, result, loss)
        if loss is not None and split in ("train", self.split):
            self.losses.setdefault(split, {})[epoch] = float(loss)
        if split != self.split or epoch < self.from_epoch or self.reason is not None:
            return
        settled = self._overfitting_settled(epoch)
        if settled:
            self._cut(run, f"cut at epoch {epoch}: {settled}", "overfitting")
            return
        v = loss if self.name == "loss" else (result.get("scalars") or {}).get(self.name)
        ref = self.reference.get(epoch)
        if not isinstance(v, (int, float)):
            return
        v = float(v) if math.isfinite(float(v)) else (-math.inf if self.mode == "max" else math.inf)
        if ref is not None and self.final is not None and self._worse(v, ref) and self._worse(v, self.final):
            self._cut(
                run,
                f"cut at epoch {epoch}: {self.split}_{self.name} {v:.4g} is more than {self.margin:g} worse "
                f"than the best run's {ref:.4g} at that epoch and its final {self.final:.4g}",
                "worse",
            )
            return
        acc = (result.get("scalars") or {}).get("accuracy")
        n_classes = len(result.get("confusion_matrix") or [])
        if self.diagnose is None or not isinstance(acc, (int, float)) or n_classes < 2:
            return
        chance = 1.0 / n_classes
        if not acc <= chance + CHANCE_MARGIN:
            return
        diagnose, self.diagnose = self.diagnose, None  # once per run
        run.flush()
        causes = sorted(diagnose().codes & ROOT_CAUSES)
        if causes:
            self._cut(
                run,
                f"cut at epoch {epoch}: {self.split} accuracy {acc:.3f} ≤ chance ({chance:.3f}) + "
                f"{CHANCE_MARGIN:g} and the run already shows {', '.join(causes)}",
                "hopeless",
            )

    def _overfitting_settled(self, epoch: int) -> str | None:
        """The ``overfitting`` check's rise rule, met already: held-out loss at least ``overfit_rise`` above
        its best, 3+ epochs after it, with the training loss still falling. More epochs only confirm it."""
        ho, tr = self.losses.get(self.split, {}), self.losses.get("train", {})
        if self.overfit_rise is None or len(ho) < 3 or not all(map(math.isfinite, ho.values())):
            return None
        b = min(ho, key=lambda e: ho[e])
        best, now = ho[b], ho.get(epoch, math.nan)
        if not (best > 0 and b <= epoch - 3 and now / best - 1.0 >= self.overfit_rise):
            return None
        if not (b in tr and epoch in tr and tr[epoch] < tr[b]):
            return None
        return (
            f"{self.split} loss {now:.4g} is {now / best - 1.0:.0%} above its best {best:.4g} (epoch {b}; "
            f"threshold {self.overfit_rise:.0%}) while the training loss kept falling: the run overfits"
        )

    def _cut(self, run: Any, reason: str, kind: str) -> None:
        self.reason, self.kind = reason, kind
        run.abort(Finding("inefficient_learning", Severity.INFO, reason, {"autofix": "trial_cut"}))


# ---- the loop ------------------------------------------------------------------------------------
@dataclass
class _Best:
    cfg: dict[str, Any]
    model: nn.Module | Path | None  # a Path: the model file a training script saved
    value: float | None
    diag: Diagnosis
    run_dir: Path
    trial: int
    view: _View
    epochs_trained: int | None = None  # epochs behind the model, continuations (``resume_from``) included


def autofix(
    train_fn: Callable[[dict[str, Any], Any], nn.Module | None],
    config: Mapping[str, Any],
    budget: int = 8,
    metric: str = "val_accuracy",
    run_root: str | os.PathLike[str] | None = None,
    tolerance: float = 0.02,
    *,
    seconds: float | None = None,
    min_gain: float = 0.0,
    defaults: Mapping[str, Any] | None = None,
    thresholds: Thresholds | Mapping[str, Any] | None = None,
    diagnose: Callable[..., Diagnosis] | None = None,
    abort_on_nonfinite: bool = True,
    remedies: Mapping[str, Callable[[_Ctx], dict[str, Any] | None]] | None = None,
    cut_margin: float | None = 0.1,
    polish: bool = True,
    verbose: bool = False,
) -> AutofixResult:
    """Repair a training configuration by trial: train, diagnose, change one hyperparameter, retrain, compare.

    Args:
        train_fn: ``train_fn(config, run)`` builds model and optimizer from ``config``, calls
            ``run.watch(model, optimizer)``, trains (``run.log`` / ``run.evaluate`` each epoch; ``tm.fit`` does
            all of it) and returns the trained model.
        config: the starting hyperparameters (see :class:`~trainmedic.remedies.fit.FitConfig` for the keys
            remedies change).
        budget: training runs at most, the baseline included.
        metric: ``<split>_<name>`` of the run's evaluations (``val_accuracy``: higher is better; names with
            ``loss``: lower is better).
        run_root: one run directory per trial (``trial-00`` …), ``best/model.pt`` + ``best/config.json``
            (the best model so far, written atomically) and ``autofix.json`` (the audit log).
        tolerance: a trial whose metric is within ``tolerance`` of the best but with fewer problems is kept.
        seconds: stop starting new trials after this much wall time.
        min_gain: a trial is kept when it beats the best metric by more than this.
        defaults: the values ``train_fn`` uses for keys missing from ``config`` (also read from a
            ``train_fn.defaults`` attribute); remedies may only change keys in ``config``, in ``defaults`` or
            read by ``train_fn``.
        diagnose: ``diagnose(run_dir) -> Diagnosis``; default :func:`trainmedic.diagnose`.
        abort_on_nonfinite: end a trial at its first NaN/Inf (nothing more can be learned from it).
        cut_margin: end a retrial early when, from a third of its epochs on, its metric is worse by more
            than this (absolute for accuracy-like metrics, relative for losses) than both the best run's at
            the same epoch and the best run's final value — it could not be kept; and end any run (the
            baseline too) that sits at chance with a root cause already diagnosed (see ``_TrialCut``).
            ``None``: never cut.
        polish: keep going while there is headroom (see :func:`_headroom`): once the diagnosis is silent
            (or no remedy is left) and the budget allows, polishing moves — the lr around the kept one,
            more epochs, a wider model, early stopping at the best epoch, lighter regularization — each
            kept only when the held-out accuracy beats the best by more than one standard error of the
            judged split (its ``margin`` in the audit). ``False``: stop as soon as the diagnosis is silent.
        train_fn may also be a trainer that records its own run (``records_own_run = True`` and
            ``run_trial(config, run_dir)``, e.g. :class:`~trainmedic.remedies.script.ScriptTrainer` for a
            training command): autofix then neither opens the run nor cuts trials early.

    Exceptions raised by ``train_fn`` in a retrial are recorded (the trial is rolled back); in the baseline
    they propagate. The best model so far is on disk whatever happens.
    """
    if not callable(train_fn):
        raise TrainmedicError(
            f"`train_fn` must be a callable train_fn(config, run); got {type(train_fn).__name__}"
        )
    if not isinstance(config, Mapping):
        raise TrainmedicError(f"`config` must be a dict of hyperparameters; got {type(config).__name__}")
    if not isinstance(budget, int) or budget < 1:
        raise TrainmedicError(f"`budget` must be a positive number of training runs; got {budget!r}")
    split, name, mode = _parse_metric(metric)
    accuracy_like = mode == "max" and name in ACCURACY_LIKE
    th = load_thresholds(dict(thresholds) if isinstance(thresholds, Mapping) else thresholds)
    root = (
        Path(run_root)
        if run_root is not None
        else Path(os.environ.get("TRAINMEDIC_RUNS", "runs")) / time.strftime("autofix-%Y%m%d-%H%M%S")
    )
    root.mkdir(parents=True, exist_ok=True)
    rules = dict(REMEDY_CHANGES if remedies is None else remedies)
    script = bool(getattr(train_fn, "records_own_run", False))
    base_defaults = dict(defaults if defaults is not None else getattr(train_fn, "defaults", None) or {})
    known: set[str] = set(config) | set(base_defaults)
    if script:  # a script takes only the hyperparameters its command line names; other config keys are facts
        known = set(base_defaults)
    t_start = time.perf_counter()

    def train_script(
        index: int, cfg: dict[str, Any]
    ) -> tuple[Path | None, Path, str | None, str | None, float]:
        """A trainer that records its own run (a training script, :mod:`trainmedic.remedies.script`)."""
        run_dir = root / f"trial-{index:02d}"
        out = train_fn.run_trial(cfg, run_dir)  # type: ignore[attr-defined]
        from ..store import DB_NAME

        recorded = (run_dir / DB_NAME).is_file()
        if out.returncode != 0:
            msg = (
                f"the training command exited with status {out.returncode}: {out.stderr_tail.strip()[-500:]}"
            )
            if index == 0 and not recorded:  # the script is broken, not the training: nothing to diagnose
                raise TrainmedicError(msg)
            return out.model_path, run_dir, msg, None, out.seconds
        if not recorded:
            raise TrainmedicError(
                f"the training command recorded no run in {str(run_dir)!r}: it must call "
                f"tm.watch(..., run_dir=os.environ['TRAINMEDIC_RUN_DIR'])"
            )
        return out.model_path, run_dir, None, None, out.seconds

    def train_once(
        index: int, cfg: dict[str, Any], cut: _TrialCut | None = None
    ) -> tuple[nn.Module | Path | None, Path, str | None, str | None, float]:
        from ..live import TrainingProblemError
        from .fit import _public_watch

        if script:
            return train_script(index, cfg)
        Run, _ = _public_watch()

        run_dir = root / f"trial-{index:02d}"
        run = Run(
            run_dir,
            overwrite=True,
            quiet=True,
            thresholds=th,
            config=cfg,
            name=f"{root.name}/trial-{index:02d}",
        )
        if abort_on_nonfinite:

            def on_problem(f: Finding) -> None:
                if f.code == "nonfinite":
                    run.control.request_stop(f"autofix: {f.message}")
                    run.abort(f)

            run.on_problem = on_problem
        if cut is not None:
            cut.inner = run.treatment
            run.treatment = cut
        tracked = TrackingConfig(cfg)
        t0 = time.perf_counter()
        model: nn.Module | None = None
        error: str | None = None
        stop: str | None = None
        try:
            model = train_fn(tracked, run)
        except TrainingProblemError as e:
            stop = e.finding.message if cut is not None and cut.reason else f"aborted: {e.finding.message}"
        except Exception as e:
            if index == 0 and run.step == 0:  # the code is broken, not the training: nothing to diagnose
                run.close(status="failed")
                raise
            error = f"{type(e).__name__}: {e}"
        finally:
            known.update(tracked.read)
            if not run.closed:
                run.close(status="closed" if error is None else "failed")
        if stop is None and run.control.should_stop:
            stop = run.control.stop_reason
        return model, run_dir, error, stop, time.perf_counter() - t0

    def make_cutter(cfg: dict[str, Any], ref: _Best | None) -> _TrialCut | None:
        cfg_view = {**base_defaults, **cfg}
        epochs = cfg_view.get("epochs")
        if cut_margin is None or not isinstance(epochs, int) or epochs < 3:
            return None
        index = len(trials) if ref is not None else 0
        run_dir = root / f"trial-{index:02d}"
        return _TrialCut(
            split,
            name,
            mode,
            ref.view.curve if ref is not None and ref.value is not None else None,
            ref.value if ref is not None else None,
            epochs,
            cut_margin,
            diagnose=(lambda: _diagnose(run_dir, th, diagnose)) if ref is None else None,
            overfit_rise=None if cfg_view.get("early_stopping") else th.overfit_val_loss_rise,
        )

    def save_best(
        model: nn.Module | Path | None, cfg: dict[str, Any], trial: int, value: float | None
    ) -> None:
        if model is None:
            return
        if isinstance(model, Path):  # a script's own model file: copied as it is, atomically
            dest = root / "best" / "model.pt"
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(".model.pt.tmp")
            shutil.copyfile(model, tmp)
            os.replace(tmp, dest)
            _atomic_write_text(root / "best" / "config.json", json.dumps(_jsonable(cfg), indent=2))
            return
        from .checkpoint import save_checkpoint

        save_checkpoint(
            root / "best" / "model.pt",
            model,
            extra={"trial": trial, "metric": metric, "value": float("nan") if value is None else value},
        )
        _atomic_write_text(root / "best" / "config.json", json.dumps(_jsonable(cfg), indent=2))

    # baseline
    cfg0 = dict(config)
    model, rd, err0, stop, secs = train_once(0, cfg0, make_cutter(cfg0, None))
    if script:  # what the command line does not say, the recorded run does (the optimizer and its momentum)
        for k, v in _recorded_optimizer(rd).items():
            if k not in cfg0 and base_defaults.get(k) is None:
                base_defaults[k] = v
    view = _read_view(rd, metric)
    value = view.value
    diag = _diagnose(rd, th, diagnose)
    trials = [
        Trial(
            0,
            None,
            None,
            {},
            None,
            value,
            True,
            [],
            sorted(diag.codes),
            secs,
            str(rd),
            err0,
            stop,
            time.perf_counter() - t_start,
        )
    ]
    e0 = {**base_defaults, **cfg0}.get("epochs")
    best = _Best(cfg0, model, value, diag, rd, 0, view, e0 if isinstance(e0, int) else None)
    best_time = time.perf_counter() - t_start
    save_best(model, cfg0, 0, value)
    tried: set[str] = {_change_key({**base_defaults, **cfg0, "resume_from": None})}
    stop_reason = "budget exhausted"
    final_choice: str | None = None
    # the trials the final model may come from (see _final_pick), pruned to those never outranked
    front: list[_Best] = _front_add([], best, mode) if _eligible(err0, False, diag, value) else []

    def write_audit(final: bool = False) -> AutofixResult:
        res = AutofixResult(
            metric=metric,
            mode=mode,
            trials=trials,
            config=dict(best.cfg),
            initial_config=dict(config),
            best_model=best.model if isinstance(best.model, nn.Module) else None,
            best_metric=best.value,
            baseline_metric=trials[0].metric_after,
            best_trial=int(best.trial),
            healthy=best.diag.healthy,
            codes=sorted(best.diag.codes),
            run_root=root,
            seconds=time.perf_counter() - t_start,
            seconds_to_best=best_time,
            stop_reason=stop_reason if final else "running",
            diagnosis=best.diag,
            final_choice=final_choice,
        )
        _atomic_write_text(root / "autofix.json", res.to_json(), durable=final)
        return res

    write_audit()
    polish_rounds: dict[str, int] = {}
    penalty: dict[str, float] = {}
    views: list[_View] = [view]  # every judged trial's view (headroom: did one do better on the way?)
    near: list[tuple[float, int, dict[str, Any]]] = []  # rolled-back polishing moves above the kept value
    while True:
        if len(trials) >= budget:
            stop_reason = "healthy; budget used" if best.diag.healthy else f"budget of {budget} runs used"
            break
        if seconds is not None and time.perf_counter() - t_start >= seconds:
            stop_reason = f"time budget of {seconds:g}s used"
            break
        eff_cfg = {**base_defaults, **best.cfg}
        choice: tuple[str, str, dict[str, Any]] | None = None
        reason: str | None = None
        polishing = False
        if not best.diag.healthy:
            choice = _pick(
                best.diag,
                eff_cfg,
                Path(best.run_dir),
                known,
                tried,
                rules,
                best.view.accuracy,
                best.model is not None,
                penalty,
            )
        if choice is None and polish:
            picked = _pick_polish(
                best,
                eff_cfg,
                known,
                tried,
                rules,
                views,
                polish_rounds,
                accuracy_like,
                trials[best.trial].config_change if best.trial else None,
                near,
            )
            if picked is not None:
                reason, choice = picked[0], picked[1:]
                polishing = True
        if choice is None:
            stop_reason = ("healthy" if best.diag.healthy else "no applicable remedy left") + (
                "" if not polish else "; no headroom left"
            )
            break
        code, remedy, change = choice
        tried.add(_change_key(change))  # as picked (the resume_from handling below may rewrite it)
        if polishing:
            polish_rounds[remedy] = polish_rounds.get(remedy, 0) + 1
        index = len(trials)
        eff = {**base_defaults, **best.cfg, **change}
        trained = int(eff["epochs"]) if isinstance(eff.get("epochs"), int) else None
        if change.get("resume_from") == CONTINUE:
            start = root / f"start-{index:02d}.pt"  # the model this trial continues, kept for the audit
            shutil.copyfile(root / "best" / "model.pt", start)
            change = {**change, "resume_from": str(start)}
            if trained is not None and best.epochs_trained is not None:
                trained += best.epochs_trained
        elif best.cfg.get("resume_from") is not None:
            # any other change retrains from scratch, for as many epochs as the continued model had
            change = {"resume_from": None, "epochs": change.get("epochs", best.epochs_trained), **change}
            change["resume_from"] = None
            trained = change["epochs"] if isinstance(change["epochs"], int) else trained
        if not polishing:  # a polishing move is judged by its change alone: it blocks no remedy
            tried.add(remedy)
            tried.update(remedy.split("+"))
        tried.add(_change_key(change))
        cfg = {**best.cfg, **change}
        old_view = {**base_defaults, **best.cfg}
        tried.add(_change_key({**base_defaults, **cfg, "resume_from": None}))
        cutter = make_cutter(cfg, best)
        model, rd, error, stop, secs = train_once(index, cfg, cutter)
        view = _read_view(rd, metric) if error is None else _View(None, {}, np.zeros(0))
        views.append(view)
        value = view.value
        diag = _diagnose(rd, th, diagnose)
        codes_before, codes_after = sorted(best.diag.codes), sorted(diag.codes)
        # "better" means better by more than the judged split's noise (one standard error of the best's
        # accuracy, from the split size, as the diagnosis judges); losses by min_gain only
        margin = max(min_gain, best.view.noise() if accuracy_like else 0.0)
        cut_worse = cutter is not None and cutter.kind == "worse"
        if polishing:
            # a polishing move never trades the model for a sicker one, and must beat the noise
            new_errors = [
                f.code
                for f in diag.problems
                if f.severity is Severity.ERROR and f.code not in best.diag.codes
            ]
            kept = (
                error is None
                and not cut_worse
                and not new_errors
                and _better(value, best.value, mode, margin)
            )
        else:
            new_errors = []
            kept = (
                error is None
                and not cut_worse
                and (
                    _better(value, best.value, mode, margin)
                    or (
                        value is not None
                        and best.value is not None
                        and abs(value - best.value) <= tolerance + 1e-9
                        and len(codes_after) < len(codes_before)
                    )
                )
            )
        trials.append(
            Trial(
                index,
                remedy,
                code,
                {k: [old_view.get(k), v] for k, v in change.items()},
                best.value,
                value,
                kept,
                codes_before,
                codes_after,
                secs,
                str(rd),
                error,
                stop,
                time.perf_counter() - t_start,
                reason=reason,
                margin=margin,
            )
        )
        if verbose:
            print(trials[-1])
        this = _Best(cfg, model, value, diag, rd, index, view, trained)
        if _eligible(error, cut_worse, diag, value):
            front = _front_add(front, this, mode)
        if kept:
            best = this
            best_time = time.perf_counter() - t_start
            save_best(model, cfg, index, value)
            near = []
        elif not polishing:
            _penalize(penalty, remedy, code, best.diag)
        elif (
            value is not None
            and _eligible(error, cut_worse, diag, value)
            and not new_errors
            and _better(value, best.value, mode)
        ):  # within the noise above the kept value: a candidate for the combine move
            near.append(
                (value if mode == "max" else -value, index, _retrain_change(best, this, base_defaults))
            )
        write_audit()
    final = _final_pick(front, best, mode, accuracy_like, tolerance)
    if final is not best:
        final_choice = (
            f"trial {final.trial} ({_fmt(final.value)}, problems {', '.join(sorted(final.diag.codes)) or 'none'}) "
            f"rather than the last kept trial {best.trial} ({_fmt(best.value)}, problems "
            f"{', '.join(sorted(best.diag.codes)) or 'none'}): the best of the finished trials without an "
            "error-level problem, among those within the noise (or tolerance) of the top value the one with the fewest "
            "problems (a move within the noise is not built on, but it is the better model to return)"
        )
        best = final
        best_time = trials[final.trial].elapsed or best_time
        save_best(final.model, final.cfg, final.trial, final.value)
    result = write_audit(final=True)
    _record_in_run(result.final_run_dir, result.to_dict())
    return result


def _eligible(error: str | None, cut_worse: bool, diag: Diagnosis, value: float | None) -> bool:
    """A trial the final model may come from: it finished (no error, not cut for being worse), was
    judged, and has no error-level problem."""
    return (
        error is None
        and not cut_worse
        and value is not None
        and not any(f.severity is Severity.ERROR for f in diag.problems)
    )


def _outranks(a: _Best, b: _Best, mode: str) -> bool:
    """``a`` is at least as good as ``b`` on both counts (held-out value, number of problems)."""
    if a.value is None or b.value is None:
        return False
    at_least = a.value >= b.value if mode == "max" else a.value <= b.value
    return at_least and len(a.diag.codes) <= len(b.diag.codes)


def _front_add(front: list[_Best], c: _Best, mode: str) -> list[_Best]:
    """Add a candidate final model, dropping the earlier ones it outranks, and itself when an earlier one
    outranks it: those could never be picked (see :func:`_final_pick`), so only a few models are held."""
    if any(_outranks(f, c, mode) for f in front):
        return front
    return [f for f in front if not _outranks(c, f, mode)] + [c]


def _final_pick(
    front: list[_Best], kept: _Best, mode: str, accuracy_like: bool, tolerance: float = 0.0
) -> _Best:
    """The model autofix returns: of the finished trials without an error-level problem (``front``) and
    the last kept one, those within one standard error (the judged split's noise, for accuracy-like
    metrics) or ``tolerance`` (autofix's: a trial that close with fewer problems is kept) of the top
    held-out value; of these the one with the fewest problems, then the best value, then the kept one. The noise rule decides which trial the search builds on; it does not make a
    finished trial that ended higher (or as high and healthier) the worse model to hand back."""
    cands = [kept, *(c for c in front if c is not kept and c.trial != kept.trial)]
    cands = [c for c in cands if c.value is not None and c.model is not None] or [kept]
    if len(cands) == 1 or kept.value is None:
        return kept
    sign = 1.0 if mode == "max" else -1.0
    top = max(cands, key=lambda c: sign * float(c.value))  # type: ignore[arg-type]
    noise = max(top.view.noise() if accuracy_like else 0.0, tolerance)
    close = [c for c in cands if sign * (float(top.value) - float(c.value)) <= noise + 1e-12]  # type: ignore[arg-type]
    return min(
        close,
        key=lambda c: (len(c.diag.codes), -sign * float(c.value), c is not kept, c.trial),  # type: ignore[arg-type]
    )


def _retrain_change(best: _Best, trial: _Best, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """What a trial changed from the kept config, with a continuation (``resume_from``) written as the
    retraining from scratch it stands for (the epochs of both runs together)."""

    def view(b: _Best) -> dict[str, Any]:
        out = {**defaults, **b.cfg, "resume_from": None}
        if b.epochs_trained is not None:
            out["epochs"] = b.epochs_trained
        return out

    a, t = view(best), view(trial)
    return {k: v for k, v in t.items() if k != "resume_from" and a.get(k, object()) != v}


def _pick(
    diag: Diagnosis,
    cfg: dict[str, Any],
    run_dir: Path,
    known: set[str],
    tried: set[str],
    rules: Mapping[str, Callable[[_Ctx], dict[str, Any] | None]],
    heldout_accuracy: np.ndarray | None = None,
    model_saved: bool = False,
    penalty: Mapping[str, float] | None = None,
) -> tuple[str, str, dict[str, Any]] | None:
    """The applicable, untried remedy with the highest vote: each problem votes for its remedies with
    weight (cause rank x severity x confidence x root-cause factor) / (1 + position in its list). Root
    causes (NaN, exploding or masked gradients) outvote symptoms (low accuracy); a cause that the diagnosis
    says *explains* a present symptom (``evidence["explains"]``, the symptom/cause model of
    :mod:`trainmedic.checks.verdict`) counts :data:`ROOT_CAUSE_FACTOR` times, and a symptom that such a
    cause explains counts :data:`EXPLAINED_SYMPTOM_FACTOR` times (its remedies treat the outcome, not the
    reason); a remedy several findings agree on wins. ``penalty`` multiplies the votes of remedies whose
    relatives already failed (:func:`_penalize`). The winner is widened into a bundle (:func:`_bundle`)
    where the diagnosis says one change alone cannot work.
    """
    ctx = _Ctx(cfg=cfg, run_dir=run_dir, known=known, diag=diag, model_saved=model_saved)
    votes: dict[str, float] = {}
    why: dict[str, tuple[float, str]] = {}
    explained = _explained_symptoms(diag)
    for f in diag.problems:
        w = (
            CAUSE_WEIGHT.get(f.code, 0.5)
            * (1.5 if f.severity is Severity.ERROR else 1.0)
            * max(f.confidence, 0.05)
            * _root_factor(f, explained)
        )
        for pos, r in enumerate(f.remedies):
            v = w / (1 + pos)
            votes[r.code] = votes.get(r.code, 0.0) + v
            if v > why.get(r.code, (0.0, ""))[0]:
                why[r.code] = (v, f.code)
    _config_prior(cfg, votes, diag)
    if heldout_accuracy is not None:
        _convergence_prior(heldout_accuracy, votes, diag)
    for code, factor in (penalty or {}).items():
        if code in votes:
            votes[code] *= factor
    top_problem = (
        max(diag.problems, key=lambda f: CAUSE_WEIGHT.get(f.code, 0.5)).code if diag.problems else ""
    )
    for code in sorted(votes, key=lambda c: -votes[c]):
        if code in tried or code not in rules:
            continue
        change = rules[code](ctx)
        if not change or any(k not in known for k in change):
            continue
        if all(cfg.get(k) == v for k, v in change.items()):
            continue
        name, change = _bundle(code, change, ctx)
        if name in tried or _change_key(change) in tried:
            continue
        return why.get(code, (0.0, top_problem))[1], name, change
    return None


ROOT_CAUSE_FACTOR = 2.0  # a cause that explains a present symptom: its remedies first
EXPLAINED_SYMPTOM_FACTOR = 0.5  # a symptom a present cause explains: treating it treats the outcome


def _explained_symptoms(diag: Diagnosis) -> set[str]:
    """Symptom codes that a present cause explains (``evidence["explains"]`` of a cause finding)."""
    out: set[str] = set()
    for f in diag.problems:
        ex = (f.evidence or {}).get("explains")
        if isinstance(ex, list):
            out.update(str(c) for c in ex)
    return out


def _root_factor(f: Finding, explained: set[str]) -> float:
    from ..checks.verdict import EXPLAINS, SYMPTOMS

    ex = (f.evidence or {}).get("explains")
    if f.code in EXPLAINS and isinstance(ex, list) and ex:
        return ROOT_CAUSE_FACTOR
    if f.code in SYMPTOMS and f.code in explained:
        return EXPLAINED_SYMPTOM_FACTOR
    return 1.0


# Remedies that act on the same thing: when one fails, its siblings are less likely to work.
REMEDY_FAMILY: dict[str, str] = {
    "lower_learning_rate": "step",
    "raise_learning_rate": "step",
    "lr_schedule": "step",
    "add_momentum": "step",
    "switch_optimizer": "step",
    "gradient_clipping": "step",
    "non_saturating_activation": "units",
    "he_init": "units",
    "xavier_init": "units",
    "batch_norm": "units",
    "add_dropout": "regularize",
    "weight_decay": "regularize",
    "data_augmentation": "regularize",
    "early_stopping": "regularize",
    "restore_best_checkpoint": "regularize",
    "class_weights": "balance",
    "oversample": "balance",
    "undersample": "balance",
    "larger_model": "capacity",
    "smaller_model": "capacity",
    "train_longer": "duration",
    "normalize_inputs": "inputs",
}
SIBLING_PENALTY = 0.4  # a failed remedy's siblings (same family) keep this share of their vote
SAME_CAUSE_PENALTY = 0.8  # the failed remedy's cause's other remedies keep this share (lowered less)


def _penalize(penalty: dict[str, float], remedy: str, finding: str | None, diag: Diagnosis) -> None:
    """A remedy (or bundle ``a+b``) tried for ``finding`` did not help: lower its siblings (the same
    family of change) by :data:`SIBLING_PENALTY` and the other remedies of the same cause by
    :data:`SAME_CAUSE_PENALTY` — the cause may still be right, this way of treating it was not."""
    parts = remedy.split("+")
    families = {REMEDY_FAMILY[p] for p in parts if p in REMEDY_FAMILY}
    for code, fam in REMEDY_FAMILY.items():
        if code not in parts and fam in families:
            penalty[code] = penalty.get(code, 1.0) * SIBLING_PENALTY
    for f in diag.problems:
        if f.code != finding:
            continue
        for r in f.remedies:
            if r.code not in parts and REMEDY_FAMILY.get(r.code) not in families:
                penalty[r.code] = penalty.get(r.code, 1.0) * SAME_CAUSE_PENALTY


def _change_key(change: Mapping[str, Any]) -> str:
    """A config change as a string, so the same change under another remedy name is not tried twice."""
    return "change:" + json.dumps(_jsonable(dict(change)), sort_keys=True)


SATURATING = ("sigmoid", "tanh", "hardtanh", "softsign")
STALL_CODES = frozenset({"inefficient_learning", "underfitting", "vanishing_gradient"})


def _plain_sgd(cfg: Mapping[str, Any]) -> bool:
    return str(cfg.get("optimizer", "adam")) == "sgd" and not float(cfg.get("momentum") or 0.0) > 0


def _bundle(code: str, change: dict[str, Any], ctx: _Ctx) -> tuple[str, dict[str, Any]]:
    """Widen a single change into the combination the diagnosis calls for (name ``a+b+c``):

    * a saturating activation (sigmoid/tanh) whose gradients vanish or are masked: switching the
      activation alone leaves a scale-mismatched init, and a new init alone leaves the flat tails — change
      activation *and* init together (LeakyReLU + He init);
    * plain SGD (no momentum) that stalls: raising its lr or adding momentum is one guess among several;
      Adam (at :data:`ADAM_LR`) adapts the step per parameter and is the robust repair;
    * plain SGD whose lr is more than twice the top of its usual range: the step was never tuned, and a
      tenth of it lands on the edge of the range, still untuned — lower it by switching to Adam.

    Keys the training code does not know are left out (the single change stays)."""
    codes = ctx.diag.codes if ctx.diag is not None else set()
    out, parts = dict(change), [code]
    act = str(ctx.cfg.get("activation", "")).lower()
    if (
        code in ("non_saturating_activation", "he_init", "xavier_init", "batch_norm")
        and act in SATURATING
        and codes & (STALL_CODES | {"gradient_masking"})
        and {"activation", "init"} <= ctx.known
    ):
        out.update(activation="leaky_relu", init="he")
        parts = ["non_saturating_activation", "he_init"]
    lr = ctx.cfg.get("lr")
    untuned = code == "lower_learning_rate" and isinstance(lr, (int, float)) and lr > 2 * LR_RANGE["sgd"][1]
    if (
        _plain_sgd(ctx.cfg)
        and (
            untuned
            or (
                codes & STALL_CODES
                and (len(parts) > 1 or code in ("raise_learning_rate", "add_momentum", "switch_optimizer"))
            )
        )
        and {"optimizer", "lr"} <= ctx.known
    ):
        out.pop("momentum", None)
        out.update(optimizer="adam", lr=ADAM_LR)
        if code in ("raise_learning_rate", "add_momentum", "lower_learning_rate"):
            parts = [p for p in parts if p not in ("raise_learning_rate", "add_momentum")]
        parts.append("switch_optimizer")
    return "+".join(dict.fromkeys(parts)), out


# A learning rate far outside the usual range of its optimizer is the likeliest root cause of what it
# produces (dead units, oscillation, NaN); such a config moves the lr remedy to the front, if a finding voted it.
# The top of each range is the diagnosis's (``checks.context.USUAL_STEP_TOP``): one table says where a step
# is too large, for the verdict and for the repair.
LR_RANGE: dict[str, tuple[float, float]] = {
    name: (low, USUAL_STEP_TOP[name])
    for name, low in (("sgd", 1e-3), ("rmsprop", 1e-5), ("adam", 1e-5), ("adamw", 1e-5))
}


PERFORMANCE_CODES = frozenset({"low_accuracy", "low_precision", "low_recall", "underfitting"})


def _config_prior(cfg: Mapping[str, Any], votes: dict[str, float], diag: Diagnosis | None = None) -> None:
    """Config evidence joins the vote: an effective step (``lr / (1 - momentum)``, see
    :func:`effective_step`) beyond its optimizer's range moves the lr remedy to the front
    (if a finding voted it; at more than twice the upper bound even if none did — such a lr is a fault by
    itself, e.g. the rising held-out loss of an over-confident model); SGD that leaves the model short of
    performance gets a half vote for Adam, the robust fallback; a saturating activation (sigmoid/tanh) in a
    net that stalls is voted next (its bundle changes activation and init together, see :func:`_bundle`)."""
    lr = effective_step(cfg)
    low_high = LR_RANGE.get(str(cfg.get("optimizer", "adam")))
    if lr is None or low_high is None or not votes:
        return
    top = max(votes.values())
    codes = diag.codes if diag is not None else set()
    lr_fault = lr > low_high[1] and ("lower_learning_rate" in votes or lr > 2 * low_high[1])
    if lr_fault:
        votes["lower_learning_rate"] = max(votes.get("lower_learning_rate", 0.0) + top, 1.01 * top)
    elif lr < low_high[0] and "raise_learning_rate" in votes:
        votes["raise_learning_rate"] += top
    if str(cfg.get("optimizer")) == "sgd" and codes & PERFORMANCE_CODES:
        votes["switch_optimizer"] = votes.get("switch_optimizer", 0.0) + 0.5 * top
    if str(cfg.get("activation", "")).lower() in SATURATING and codes & (STALL_CODES | {"gradient_masking"}):
        # a saturating activation in a net that does not learn: the likeliest cause, whatever was measured;
        # first, unless the step is out of range (a fault by itself, and it hides every other)
        others = [
            v
            for k, v in votes.items()
            if k != "non_saturating_activation" and not (lr_fault and k == "lower_learning_rate")
        ]
        votes["non_saturating_activation"] = max(
            votes.get("non_saturating_activation", 0.0), 1.01 * max(others, default=top)
        )
        if lr_fault:
            votes["lower_learning_rate"] = max(
                votes["lower_learning_rate"], 1.01 * votes["non_saturating_activation"]
            )


STILL_IMPROVING = 0.005  # held-out accuracy gained over the last epoch that counts as "not converged"


def _still_improving(acc: np.ndarray) -> bool:
    """Held-out accuracy rose by more than :data:`STILL_IMPROVING` in the last epoch: not converged."""
    return bool(len(acc) >= 2 and acc[-1] - acc[-2] > STILL_IMPROVING)


ACCURACY_LIKE = frozenset({"accuracy", "balanced_accuracy", "f1", "macro_f1", "precision", "recall"})
TRAIN_HEADROOM = 0.02  # training accuracy this far below 1.0: the model has not fit what the data allows
POLISH_ROUNDS_PER_MOVE = 2  # each polishing move (lr down/up, train longer, wider) at most this often
POLISH_LR_FACTOR = 3.0  # polishing moves the lr by this factor around the kept one
NOISY_LABEL_CODES = frozenset({"label_noise", "low_data_quality"})


def _headroom(
    best: _Best,
    cfg: Mapping[str, Any],
    views: list[_View],
    accuracy_like: bool,
    last_change: Mapping[str, list[Any]] | None = None,
    combine: list[tuple[int, int]] | None = None,
) -> list[tuple[str, str]]:
    """Evidence that the kept model can do better although the diagnosis may be silent, as
    ``(reason, move)`` pairs, strongest first; moves: ``lower_learning_rate`` / ``raise_learning_rate``
    (around the kept lr), ``train_longer``, ``larger_model``, ``early_stopping`` (keep the best epoch).

    * the effective step ``lr / (1 - momentum)`` is outside its optimizer's usual range;
    * held-out accuracy still rose in the last epoch by more than :data:`STILL_IMPROVING`;
    * the kept run itself did better on the way (an earlier epoch beat its final value by more than the
      split's noise);
    * training accuracy is more than :data:`TRAIN_HEADROOM` below 1.0 (and no label-noise finding says the
      data allows less);
    * another trial of this autofix reached a better held-out value at some epoch than the kept model;
    * the kept trial moved the lr and that helped: one more step the same way comes first;
    * the inputs are fed unstandardized (``normalize_inputs`` off).

    Then, while the budget lasts: ``combine`` — two rolled-back polishing moves that each ended above the
    kept value, but within the noise, tried together (``combine`` holds their trial indices); and the
    moves of :func:`_fallback`, in the order the kept run's evidence suggests — each kept only when it
    beats the noise, like every polishing move.
    """
    out: list[tuple[str, str]] = []
    lr_move = (last_change or {}).get("lr")
    if (
        "optimizer" not in (last_change or {})
        and isinstance(lr_move, list)
        and len(lr_move) == 2
        and all(isinstance(v, (int, float)) for v in lr_move)
    ):
        if lr_move[1] > lr_move[0]:
            out.append((f"raising the lr {lr_move[0]:g} -> {lr_move[1]:g} helped", "raise_learning_rate"))
        elif lr_move[1] < lr_move[0]:
            out.append((f"lowering the lr {lr_move[0]:g} -> {lr_move[1]:g} helped", "lower_learning_rate"))
    eff = effective_step(cfg)
    rng = LR_RANGE.get(str(cfg.get("optimizer", "adam")))
    if eff is not None and rng is not None:
        if eff > rng[1]:
            out.append(
                (
                    f"effective step lr/(1-momentum) = {eff:.3g} is above the usual range "
                    f"{rng[0]:g}..{rng[1]:g} of {cfg.get('optimizer', 'adam')}",
                    "lower_learning_rate",
                )
            )
        elif eff < rng[0]:
            out.append(
                (
                    f"effective step lr/(1-momentum) = {eff:.3g} is below the usual range "
                    f"{rng[0]:g}..{rng[1]:g} of {cfg.get('optimizer', 'adam')}",
                    "raise_learning_rate",
                )
            )
    if cfg.get("normalize_inputs") is False:
        out.append(("the inputs are fed unstandardized (normalize_inputs is off)", "normalize_inputs"))
    if best.value is None or not accuracy_like:
        return out
    noise = best.view.noise()
    acc = best.view.accuracy
    if _still_improving(acc):
        out.append(
            (f"held-out accuracy still rose by {acc[-1] - acc[-2]:.3f} in the last epoch", "train_longer")
        )
    curve = best.view.curve
    if curve:
        e_peak = max(curve, key=lambda e: curve[e])
        if curve[e_peak] > best.value + noise:
            out.append(
                (
                    f"the kept run reached {curve[e_peak]:.4f} at epoch {e_peak}, above its final "
                    f"{best.value:.4f} by more than the noise {noise:.4f}",
                    "early_stopping",
                )
            )
    tr = best.view.train_accuracy
    if tr is not None and tr < 1.0 - TRAIN_HEADROOM and not best.diag.codes & NOISY_LABEL_CODES:
        why = f"training accuracy {tr:.3f} is more than {TRAIN_HEADROOM:g} below 1.0 (the model does not fit the data)"
        moves = ["train_longer", "raise_learning_rate", "larger_model"]
        if str(cfg.get("activation", "")).lower() in SATURATING:
            moves.insert(0, "non_saturating_activation")  # the likeliest reason a deep net fits slowly
        if _less_regularization(cfg) is not None:
            moves.insert(0, "less_regularization")  # heavy dropout / weight decay holds the fit back
        out += [(why, m) for m in moves]
    peaks = [(max(v.curve.values()), i) for i, v in enumerate(views) if v.curve and v is not best.view]
    if peaks:
        peak, i = max(peaks)
        if peak > best.value + noise:
            why = (
                f"trial {i} reached {peak:.4f} on the way, above the kept {best.value:.4f} by more than "
                f"the noise {noise:.4f}"
            )
            out += [(why, "lower_learning_rate"), (why, "raise_learning_rate"), (why, "train_longer")]
    for i, j in combine or []:
        out.append((f"trials {i} and {j} each ended above the kept value, within the noise: both", "combine"))
    out += _fallback(best, cfg, noise)
    return out


OSCILLATION = (
    2.0  # a held-out drop between epochs of more than this many standard errors: the step is too big
)


def _fallback(best: _Best, cfg: Mapping[str, Any], noise: float) -> list[tuple[str, str]]:
    """The polishing moves for the budget that is left, in the order the kept run's evidence suggests
    (each still kept only when it beats the noise):

    * held-out accuracy that drops between epochs in the second half of the run by more than
      :data:`OSCILLATION` standard errors: the step is too big, a lower lr first;
    * inputs fed unstandardized (and standardizing them alone did not help: the lr was tuned to the raw
      scale): batch normalization rescales every layer's input, then Adam for plain SGD;
    * the best epoch is one of the last two (not converged): more epochs and a higher lr first;
    * otherwise (converged, fits the training data): a wider model (more capacity generalizes better for
      an MLP that fits its data), twice, then the lr up, more epochs, batch normalization;
    * plain SGD gets Adam (:data:`ADAM_LR`, the robust default) before the lr is lowered; lowering the lr
      of a converged run under a fixed number of epochs is the move that helps least, so it comes last."""
    acc = best.view.accuracy
    half = acc[len(acc) // 2 :]
    drops = np.diff(half) if len(half) >= 2 else np.zeros(0)
    oscillating = bool(noise > 0 and drops.size and -drops.min() > OSCILLATION * noise)
    curve = best.view.curve
    late_peak = bool(curve) and max(curve, key=lambda e: curve[e]) >= sorted(curve)[-min(2, len(curve))]
    sgd = ["switch_optimizer"] if _plain_sgd(cfg) else []
    if oscillating:
        why = "held-out accuracy drops between epochs by more than the noise: a smaller step"
        moves = ["lower_learning_rate", "batch_norm", "larger_model", *sgd, "train_longer"]
    elif cfg.get("normalize_inputs") is False:
        why = "budget left, inputs unstandardized: batch normalization, then the optimizer, epochs, width"
        moves = ["batch_norm", *sgd, "train_longer", "larger_model", "raise_learning_rate"]
    elif late_peak:
        why = "budget left, the best epoch is one of the last: more epochs, a higher lr, a wider model"
        moves = ["train_longer", "raise_learning_rate", "larger_model", "batch_norm", *sgd]
    else:
        why = "budget left, converged: a wider model, the lr up, more epochs, batch normalization"
        moves = ["larger_model", "raise_learning_rate", "train_longer", "batch_norm", *sgd]
    if "lower_learning_rate" not in moves:
        moves.append("lower_learning_rate")
    return [(why, m) for m in moves]


HEAVY_DROPOUT = 0.3  # less_regularization halves a dropout rate above this ...
HEAVY_WEIGHT_DECAY = 1e-3  # ... and divides a weight decay above this by 10


def _less_regularization(cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    p = cfg.get("dropout")
    if isinstance(p, (int, float)) and p > HEAVY_DROPOUT:
        out["dropout"] = round(p / 2, 3)
    wd = cfg.get("weight_decay")
    if isinstance(wd, (int, float)) and wd > HEAVY_WEIGHT_DECAY:
        out["weight_decay"] = _sig(wd / 10)
    return out or None


def _non_saturating_polish(ctx: _Ctx) -> dict[str, Any] | None:
    """LeakyReLU, with He init where the training code takes ``init`` (the pair that fits the new scale)."""
    if str(ctx.cfg.get("activation", "")).lower() not in SATURATING:
        return None
    change: dict[str, Any] = {"activation": "leaky_relu"}
    if "init" in ctx.known and ctx.cfg.get("init") in (None, "default", "xavier"):
        change["init"] = "he"
    return change


def _pick_polish(
    best: _Best,
    cfg: dict[str, Any],
    known: set[str],
    tried: set[str],
    rules: Mapping[str, Callable[[_Ctx], dict[str, Any] | None]],
    views: list[_View],
    rounds: Mapping[str, int],
    accuracy_like: bool,
    last_change: Mapping[str, list[Any]] | None = None,
    near: list[tuple[float, int, dict[str, Any]]] | None = None,
) -> tuple[str, str, str, dict[str, Any]] | None:
    """The first untried polishing move the headroom evidence calls for (:func:`_headroom`), as
    ``(reason, "headroom", move, change)``. The lr moves go :data:`POLISH_LR_FACTOR` around the kept lr
    (back into range at once when the effective step is outside it). ``near``: ``(value, trial, change)``
    of the rolled-back polishing moves since the kept trial that ended above it (within the noise; a
    continuation as the retraining it stands for); the best two that change different keys are the
    ``combine`` move."""
    ctx = _Ctx(cfg, Path(best.run_dir), known, best.diag, model_saved=best.model is not None)
    pair = _near_pair(near or [])
    polish_rules: dict[str, Callable[[_Ctx], dict[str, Any] | None]] = {
        "lower_learning_rate": lambda c: _lower_lr(c, POLISH_LR_FACTOR),
        "raise_learning_rate": lambda c: _raise_lr(c, POLISH_LR_FACTOR),
        "non_saturating_activation": _non_saturating_polish,
        "less_regularization": lambda c: _less_regularization(c.cfg),
        "combine": lambda c: None if pair is None else {**pair[1], **pair[3]},
    }
    combine = None if pair is None else [(pair[0], pair[2])]
    for why, move in _headroom(best, cfg, views, accuracy_like, last_change, combine):
        if (move not in rules and move not in polish_rules) or rounds.get(move, 0) >= POLISH_ROUNDS_PER_MOVE:
            continue
        change = (polish_rules.get(move) or rules[move])(ctx)
        if not change or any(k not in known for k in change) or _change_key(change) in tried:
            continue
        if "resume_from" not in change and _change_key({**cfg, **change, "resume_from": None}) in tried:
            continue  # this very config was trained already (another route to it)
        if (
            all(cfg.get(k) == v for k, v in change.items() if k != "resume_from")
            and "resume_from" not in change
        ):
            continue
        return why, "headroom", move, change
    return None


def _near_pair(
    near: list[tuple[float, int, dict[str, Any]]],
) -> tuple[int, dict[str, Any], int, dict[str, Any]] | None:
    """The two best ``near`` moves (see :func:`_pick_polish`) that change different keys."""
    ranked = sorted(near, key=lambda n: (-n[0], n[1]))
    for a in range(len(ranked)):
        for b in range(a + 1, len(ranked)):
            (_, i, ca), (_, j, cb) = ranked[a], ranked[b]
            if not set(ca) & set(cb):
                return (i, ca, j, cb) if i < j else (j, cb, i, ca)
    return None


def _convergence_prior(acc: np.ndarray, votes: dict[str, float], diag: Diagnosis) -> None:
    """Only performance symptoms left (no cause found) and the held-out accuracy still rose in the last
    epoch: the run stopped before converging, so more epochs is the likeliest repair (it gets a vote just
    above the best; class weights for a class that is merely not learned yet would be a guess)."""
    if not votes or not diag.codes or not diag.codes <= PERFORMANCE_CODES:
        return
    if _still_improving(acc):
        votes["train_longer"] = max(votes.get("train_longer", 0.0), 1.01 * max(votes.values()))


def _record_in_run(run_dir: Path, data: dict[str, Any]) -> None:
    """Store the audit log in a closed run (``records`` kind ``autofix``), keeping its status."""
    from ..store.reader import RunReader
    from ..store.writer import RunWriter

    try:
        with RunReader(run_dir) as r:
            status = str(r.meta.get("status") or "closed")
        w = RunWriter(run_dir, mode="resume")
        w.add_record("autofix", data)
        w.close(status=status)
    except Exception as e:  # the audit is also in autofix.json; never lose the result over this
        import warnings

        warnings.warn(
            f"trainmedic: could not store the autofix record in {run_dir}: {e}", RuntimeWarning, stacklevel=2
        )


# ---- a minimal diagnosis, used only while trainmedic.checks has no diagnose() --------------------
def basic_diagnose(run_dir: str | os.PathLike[str], thresholds: Thresholds | None = None) -> Diagnosis:
    """A small subset of the checks (NaN/Inf, exploding, overfitting, underfitting, dead/saturated units,
    vanishing gradients, zero init, stalled loss, imbalance, low accuracy), each message built from the
    comparison that decided it. Stand-in until :func:`trainmedic.diagnose` lands."""
    from ..store.reader import RunReader

    t = thresholds or load_thresholds()
    out: list[Finding] = []
    R = RemedySuggestion.of
    with RunReader(run_dir) as r:
        for sig in ("loss", "grad_norm"):
            s = r.scalar(sig)
            bad = np.flatnonzero(~np.isfinite(s.values))
            if bad.size:
                step = int(s.steps[bad[0]])
                out.append(
                    Finding(
                        "nonfinite",
                        Severity.ERROR,
                        f"{sig} is NaN/Inf from step {step}",
                        {"signal": sig, "first_step": step},
                        [R("lower_learning_rate"), R("gradient_clipping"), R("normalize_inputs")],
                        step=step,
                    )
                )
                break
        for e in r.events("live_finding"):
            if e["code"] == "exploding_gradient":
                out.append(
                    Finding(
                        "exploding_gradient",
                        Severity.ERROR,
                        e["message"],
                        dict((e["data"] or {}).get("evidence", {})),
                        [R("lower_learning_rate"), R("gradient_clipping"), R("batch_norm")],
                        step=e["step"],
                    )
                )
        tr_acc, va_acc = r.eval_series("train", "accuracy"), r.eval_series("val", "accuracy")
        tr_loss, va_loss = r.eval_series("train", "loss"), r.eval_series("val", "loss")
        fit_rec = r.record("fit")
        end = (
            int(fit_rec["restored_epoch"])
            if isinstance(fit_rec, dict) and fit_rec.get("restored_epoch") is not None
            else None
        )

        def at(s: Any) -> float | None:
            if not len(s):
                return None
            idx = np.flatnonzero(s.steps == end) if end is not None else np.zeros(0, dtype=np.int64)
            v = float(s.values[idx[-1]] if idx.size else s.values[-1])
            return v if math.isfinite(v) else None

        a_tr, a_va = at(tr_acc), at(va_acc)
        if len(va_loss) >= 3 and np.isfinite(va_loss.values).all():
            b = int(np.argmin(va_loss.values))
            best, last = float(va_loss.values[b]), float(va_loss.values[-1])
            rise = (last - best) / abs(best) if best else 0.0
            tr_fall = len(tr_loss) == len(va_loss) and tr_loss.values[-1] < tr_loss.values[b]
            gap = (a_tr - a_va) if a_tr is not None and a_va is not None else 0.0
            if end is None and rise >= t.overfit_val_loss_rise and tr_fall and b < len(va_loss) - 1:
                out.append(
                    Finding(
                        "overfitting",
                        Severity.WARNING,
                        f"val loss {last:.4g} is {rise:.0%} above its best {best:.4g} (epoch {b}; threshold {t.overfit_val_loss_rise:.0%}) while train loss kept falling",
                        {"best_epoch": b, "rise": rise, "threshold": t.overfit_val_loss_rise},
                        [R("early_stopping"), R("add_dropout"), R("weight_decay"), R("data_augmentation")],
                    )
                )
            elif gap >= t.overfit_gap and (a_va or 0) < 0.97:
                out.append(
                    Finding(
                        "overfitting",
                        Severity.WARNING,
                        f"train accuracy {a_tr:.3f} exceeds val accuracy {a_va:.3f} by {gap:.3f} (threshold {t.overfit_gap:g})",
                        {"gap": gap, "threshold": t.overfit_gap},
                        [R("add_dropout"), R("weight_decay"), R("data_augmentation"), R("early_stopping")],
                    )
                )
        dead = r.layer_stat("act_dead")
        sat = r.layer_stat("act_saturated")
        masked = False
        for ls, thr, what, rems in (
            (
                dead,
                t.dead_fraction,
                "dead ReLU units",
                [R("non_saturating_activation"), R("he_init"), R("batch_norm"), R("lower_learning_rate")],
            ),
            (
                sat,
                t.saturated_fraction,
                "saturated units",
                [R("non_saturating_activation"), R("batch_norm"), R("xavier_init")],
            ),
        ):
            if len(ls.steps):
                last_row = np.nan_to_num(ls.values[-max(1, len(ls.steps) // 5) :].mean(axis=0), nan=0.0)
                j = int(np.argmax(last_row))
                if last_row[j] >= thr:
                    masked = True
                    out.append(
                        Finding(
                            "gradient_masking",
                            Severity.WARNING,
                            f"{last_row[j]:.0%} {what} in {ls.layers[j]} (threshold {thr:.0%})",
                            {"layer": ls.layers[j], "fraction": float(last_row[j]), "threshold": thr},
                            rems,
                            layer=ls.layers[j],
                        )
                    )
        g = r.layer_stat("grad_norm")
        if len(g.steps) and g.values.shape[1] >= 2:
            med = np.nanmedian(np.where(np.isfinite(g.values), g.values, np.nan), axis=0)
            if (
                np.isfinite(med[0])
                and np.isfinite(med[-1])
                and med[-1] > 0
                and med[0] / med[-1] < t.vanishing_ratio
            ):
                out.append(
                    Finding(
                        "vanishing_gradient",
                        Severity.WARNING,
                        f"first/last layer gradient norm ratio {med[0] / med[-1]:.2e} < {t.vanishing_ratio:g}",
                        {"ratio": float(med[0] / med[-1]), "threshold": t.vanishing_ratio},
                        [R("non_saturating_activation"), R("he_init"), R("batch_norm")],
                    )
                )
        w = r.layer_stat("weight_norm")
        if len(w.steps) and np.any(w.values[0] == 0):
            lay = w.layers[int(np.flatnonzero(w.values[0] == 0)[0])]
            out.append(
                Finding(
                    "bad_initialization",
                    Severity.WARNING,
                    f"layer {lay} starts with all-zero weights: its units stay identical",
                    {"layer": lay},
                    [R("he_init"), R("xavier_init")],
                    layer=lay,
                )
            )
        if a_tr is not None and a_tr < t.underfit_train_accuracy and not masked:
            loss = r.scalar("loss").values
            loss = loss[np.isfinite(loss)]
            k = max(1, len(loss) // 10)
            rel = (
                (loss[:k].mean() - loss[-k:].mean()) / abs(loss[:k].mean())
                if len(loss) >= 4 and loss[:k].mean()
                else 1.0
            )
            if rel < t.plateau_rel_improvement * 10:
                out.append(
                    Finding(
                        "inefficient_learning",
                        Severity.WARNING,
                        f"training loss improved by {rel:.1%} over the run (threshold {t.plateau_rel_improvement * 10:.0%})",
                        {"relative_improvement": float(rel), "threshold": t.plateau_rel_improvement * 10},
                        [
                            R("raise_learning_rate"),
                            R("add_momentum"),
                            R("switch_optimizer"),
                            R("lr_schedule"),
                        ],
                    )
                )
            out.append(
                Finding(
                    "underfitting",
                    Severity.WARNING,
                    f"train accuracy {a_tr:.3f} < {t.underfit_train_accuracy:g}",
                    {"train_accuracy": a_tr, "threshold": t.underfit_train_accuracy},
                    [R("switch_optimizer"), R("raise_learning_rate"), R("train_longer"), R("larger_model")],
                )
            )
        recs = r.records("classification", "val")
        if recs:
            per = recs[-1]["data"].get("per_class", {})
            recall = per.get("recall") if isinstance(per, dict) else None
            cm = np.asarray(recs[-1]["data"].get("confusion_matrix", []), dtype=float)
            counts = cm.sum(axis=1) if cm.ndim == 2 else np.zeros(0)
            tr_counts = np.asarray((r.meta.get("split/train") or {}).get("class_counts") or [], dtype=float)
            ratio = (
                tr_counts.max() / max(tr_counts[tr_counts > 0].min(), 1)
                if tr_counts.size and (tr_counts > 0).any()
                else 1.0
            )
            if recall is None and cm.ndim == 2 and cm.size:
                recall = (np.diag(cm) / np.maximum(counts, 1)).tolist()
            if recall and ratio >= t.imbalance_ratio and min(recall) < t.min_recall:
                out.append(
                    Finding(
                        "data_imbalance",
                        Severity.WARNING,
                        f"classes are {ratio:.0f}:1 in training (threshold {t.imbalance_ratio:g}) and the weakest val recall is {min(recall):.2f} (< {t.min_recall:g})",
                        {
                            "ratio": float(ratio),
                            "min_recall": float(min(recall)),
                            "threshold_ratio": t.imbalance_ratio,
                            "threshold_recall": t.min_recall,
                        },
                        [R("class_weights"), R("oversample")],
                    )
                )
        if a_va is not None and a_va < t.min_accuracy:
            out.append(
                Finding(
                    "low_accuracy",
                    Severity.WARNING,
                    f"val accuracy {a_va:.3f} < {t.min_accuracy:g}",
                    {"accuracy": a_va, "threshold": t.min_accuracy},
                    [R("lower_learning_rate"), R("switch_optimizer"), R("train_longer")],
                    split="val",
                )
            )
    d = Diagnosis(str(run_dir), signals={"source": "autofix.basic_diagnose"})
    d.extend(out)
    return d


# ---- demo ----------------------------------------------------------------------------------------
def demo_fix(out_dir: str | os.PathLike[str], budget: int = 4) -> AutofixResult:
    """A faulty run (digits MLP, SGD at lr 3.0: the gradients explode) repaired by autofix, for ``trainmedic demo``."""
    from ..scenarios.train import DEFAULTS, train_fn

    faulty = {"optimizer": "sgd", "lr": 3.0, "epochs": 6}
    return autofix(train_fn, faulty, budget=budget, run_root=out_dir, defaults=DEFAULTS)
