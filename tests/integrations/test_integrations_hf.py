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
        assert r.epochs("val") == [0, 1, 2] and r.epochs("train") == [0, 1, 2]
        assert r.confusion_matrix("val").sum() == 96
        val_loss = r.eval_series("val", "loss").values
        assert len(val_loss) == 3 and np.isfinite(val_loss).all()
        assert "runtime" not in r.eval_names("val")
        assert r.meta["config"]["framework"] == "transformers"

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
