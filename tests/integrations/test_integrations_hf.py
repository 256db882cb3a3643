"""The Hugging Face callback records a real Trainer run of a tiny BERT built from a config (no downloads)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import trainmedic as tm  # noqa: E402
from trainmedic.integrations import hf as tm_hf  # noqa: E402

SEQ = 12


class TokenData(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Synthetic token sequences; the label is whether the second token is below 25 (learnable)."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 50, (n, SEQ), generator=g)
        self.labels = (self.ids[:, 1] < 25).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.ids[i],
            "attention_mask": torch.ones(SEQ, dtype=torch.long),
            "labels": self.labels[i],
        }


def _bert() -> Any:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=2,
    )
    return transformers.BertForSequenceClassification(config)


def _args(tmp_path: Path, **kw: Any) -> Any:
    base: dict[str, Any] = {
        "output_dir": str(tmp_path / "hf"),
        "per_device_train_batch_size": 32,
        "per_device_eval_batch_size": 64,
        "num_train_epochs": 3,
        "learning_rate": 3e-3,
        "logging_steps": 1,
        "eval_strategy": "epoch",
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "disable_tqdm": True,
        "max_grad_norm": 1e6,  # clipping is a no-op, so the Trainer's logged grad_norm is the applied one
        "seed": 0,
    }
    base.update(kw)
    return transformers.TrainingArguments(**base)


class _LogSpy(transformers.TrainerCallback):  # type: ignore[misc]
    def __init__(self) -> None:
        self.logs: list[dict[str, float]] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        if logs and "loss" in logs and "grad_norm" in logs:
            self.logs.append(dict(logs))


def test_hf_callback_records_loss_gradients_and_confusion_matrix(tmp_path: Path) -> None:
    spy = _LogSpy()
    cb = tm_hf.TrainmedicCallback(tmp_path / "run", quiet=True, every=2)
    trainer = transformers.Trainer(
        model=_bert(),
        args=_args(tmp_path),
        train_dataset=TokenData(192, 0),
        eval_dataset=TokenData(96, 1),
        callbacks=[spy, cb],
        compute_metrics=tm_hf.compute_metrics,
    )
    trainer.train()
    assert cb.run is not None and cb.run.closed
    with tm.open_run(tmp_path / "run") as r:
        assert r.meta["status"] == "closed"
        loss, gn = r.scalar("loss"), r.scalar("grad_norm")
        assert loss.steps.tolist() == list(range(18)) and gn.steps.tolist() == list(range(18))
        # the model's own loss per step and the gradient the optimizer applied match what the Trainer logs
        np.testing.assert_allclose(loss.values, [log["loss"] for log in spy.logs], rtol=1e-4)
        np.testing.assert_allclose(gn.values, [log["grad_norm"] for log in spy.logs], rtol=1e-4)
        lr = r.scalar("lr/0")  # the Trainer makes two param groups (with and without weight decay)
        assert lr.values[0] == pytest.approx(3e-3) and lr.values[-1] < lr.values[0]  # linear decay recorded
        wn = r.layer_stat("weight_norm")
        assert "classifier" in wn.layers and wn.steps.tolist() == list(range(0, 18, 2))
        assert np.isfinite(r.layer_stat("update_ratio").values).all()
        assert r.epochs("val") == [0, 1, 2] and r.epochs("train_running") == [0, 1, 2]
        assert r.meta["batch_size"] == 32 and r.confusion_matrix("train_running", epoch=2).sum() == 192
        assert "train" not in r.splits
        assert r.confusion_matrix("val").sum() == 96
        val_loss = r.eval_series("val", "loss").values
        assert len(val_loss) == 3 and np.isfinite(val_loss).all()
        assert "runtime" not in r.eval_names("val")
        assert r.meta["config"]["framework"] == "transformers"
        # BERT's GELUActivation modules are measured beside the pooler's Tanh
        acts = r.layer_stat("act_mean")
        assert "bert.encoder.layer.0.intermediate.intermediate_act_fn" in acts.layers
        assert "bert.pooler.activation" in acts.layers and np.isfinite(acts.values).all()

    diagnose = getattr(importlib.import_module("trainmedic.checks"), "diagnose", None)
    if diagnose is not None:
        assert isinstance(diagnose(tmp_path / "run"), tm.Diagnosis)


def test_hf_compute_metrics_and_control_stop(tmp_path: Path) -> None:
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 2.0]])
    labels = np.array([0, 1, 1, 1])
    m = tm_hf.compute_metrics((logits, labels))
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["recall"] == pytest.approx((1.0 + 2 / 3) / 2)
    with pytest.raises(tm.TrainmedicError, match="`eval_pred` must be"):
        tm_hf.compute_metrics(logits)

    class StopAt3(tm_hf.TrainmedicCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            if state.global_step == 3 and self.run is not None and hasattr(self.run, "control"):
                self.run.control.request_stop("test stop")
            return super().on_step_end(args, state, control, **kw)

    cb = StopAt3(tmp_path / "stop", quiet=True)
    trainer = transformers.Trainer(
        model=_bert(),
        args=_args(tmp_path, eval_strategy="no"),
        train_dataset=TokenData(192, 0),
        callbacks=[cb],
    )
    trainer.train()
    if not hasattr(cb.run, "control"):
        pytest.skip("Run.control (remedies) is not available in this tree")
    assert trainer.state.global_step == 3


class DigitsMLP(torch.nn.Module):
    """What a Trainer trains: a module taking keyword inputs and ``labels``, returning loss and logits."""

    def __init__(self, width: int, classes: int) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(64, width), torch.nn.ReLU(), torch.nn.Linear(width, classes)
        )

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.net(x)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = torch.nn.functional.cross_entropy(logits, labels)
        return out


class Rows(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __init__(self, X: np.ndarray, y: np.ndarray) -> None:
        self.X, self.y = torch.from_numpy(X), torch.from_numpy(y)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.X[i], "labels": self.y[i]}


def test_hf_parity_overfit_and_collapse_found_healthy_silent(tmp_path: Path) -> None:
    """The parity fits of parity.py under a Trainer: running training metrics from the model's logits and
    the batch's labels, validation through compute_metrics."""
    import parity

    found = {}
    for name, case in parity.cases().items():
        torch.manual_seed(0)
        cb = tm_hf.TrainmedicCallback(tmp_path / name, quiet=True)
        args = _args(
            tmp_path / f"hf_{name}",
            per_device_train_batch_size=case.batch_size,
            per_device_eval_batch_size=512,
            num_train_epochs=case.epochs,
            learning_rate=case.lr,
            lr_scheduler_type="constant",
            logging_steps=50,
            max_grad_norm=0.0,
        )
        transformers.Trainer(
            model=DigitsMLP(case.width, case.classes),
            args=args,
            train_dataset=Rows(case.X_train, case.y_train),
            eval_dataset=Rows(case.X_val, case.y_val),
            callbacks=[cb],
            compute_metrics=tm_hf.compute_metrics,
        ).train()
        found[name] = parity.problems(tmp_path / name)
        with tm.open_run(tmp_path / name) as r:
            assert r.epochs("train_running") == list(range(case.epochs))
            assert r.confusion_matrix("train_running").sum() == len(case.y_train)
            assert r.meta["batch_size"] == case.batch_size
    assert not parity.check(found), parity.summary(found)


def test_hf_failure_inside_the_model_closes_the_run_as_failed(tmp_path: Path) -> None:
    class Breaks(DigitsMLP):
        calls = 0

        def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
            Breaks.calls += 1
            if Breaks.calls == 4:
                raise RuntimeError("corrupt batch 4")
            return super().forward(x, labels)

    import parity

    case = parity.cases()["healthy"]
    cb = tm_hf.TrainmedicCallback(tmp_path / "fail", quiet=True)
    trainer = transformers.Trainer(
        model=Breaks(8, 10),
        args=_args(tmp_path, eval_strategy="no", num_train_epochs=1),
        train_dataset=Rows(case.X_train, case.y_train),
        callbacks=[cb],
    )
    with pytest.raises(RuntimeError, match="corrupt batch 4"):
        trainer.train()
    with tm.open_run(tmp_path / "fail") as r:
        assert r.meta["status"] == "failed"
        assert "corrupt batch 4" in r.events("training_exception")[0]["message"]
    failed = tm.diagnose(tmp_path / "fail").by_code("training_failed")
    assert failed and "corrupt batch 4" in failed[0].message
    assert "forward" not in trainer.model.__dict__  # the wrapper is gone once the run is closed
