"""Overhead of each framework callback: the same fit with and without ``TrainmedicCallback``.

Run: ``python benchmarks/integrations_bench.py [--repeats 3] [--only lightning,keras,hf]``. Prints, per
framework that is installed, the best-of-N and median wall time of the bare fit and of the fit with the
callback (bare and watched alternate in one process), their ratios and the import time of the framework.
Small MLP on sklearn digits (1,437 rows, batch 64, 5 epochs = 115 steps), or a tiny BERT for HF. Keras runs
on the torch backend in this process and, when tensorflow is installed, on the TensorFlow backend in a
child process (Keras picks its backend once per process): ``KERAS_BACKEND=tensorflow ... --only keras``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

EPOCHS, BATCH = 5, 64


def _digits() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y.astype(np.int64)


def _best(fn: Callable[[bool], None], repeats: int) -> tuple[float, float, float, float]:
    """Best and median of bare and watched fits, alternating (after one warm-up fit of each)."""
    fn(False)
    fn(True)
    bare, watched = [], []
    for _ in range(repeats):
        for flag, out in ((False, bare), (True, watched)):
            t = time.perf_counter()
            fn(flag)
            out.append(time.perf_counter() - t)
    return min(bare), min(watched), statistics.median(bare), statistics.median(watched)


def bench_lightning(repeats: int) -> tuple[float, ...]:
    t = time.perf_counter()
    import lightning.pytorch as pl

    from trainmedic.integrations.lightning import TrainmedicCallback

    imp = time.perf_counter() - t
    X, y = _digits()
    ds = torch.utils.data.TensorDataset(torch.from_numpy(X), torch.from_numpy(y))

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            return torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1])

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    def fit(watched: bool) -> None:
        torch.manual_seed(0)
        cbs = [TrainmedicCallback(tempfile.mkdtemp(), quiet=True)] if watched else []
        pl.Trainer(
            accelerator="cpu", devices=1, max_epochs=EPOCHS, callbacks=cbs, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        ).fit(Module(), torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True))  # fmt: skip

    return (imp, *_best(fit, repeats))


def bench_keras(repeats: int) -> tuple[float, ...]:
    t = time.perf_counter()
    import keras

    from trainmedic.integrations.keras import TrainmedicCallback

    imp = time.perf_counter() - t
    X, y = _digits()

    def fit(watched: bool) -> None:
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)]
        )
        model.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        cbs = [TrainmedicCallback(tempfile.mkdtemp(), quiet=True)] if watched else []
        model.fit(X, y, epochs=EPOCHS, batch_size=BATCH, verbose=0, callbacks=cbs)

    return (imp, *_best(fit, repeats))


def bench_hf(repeats: int) -> tuple[float, ...]:
    t = time.perf_counter()
    import transformers

    from trainmedic.integrations import hf

    imp = time.perf_counter() - t
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 50, (384, 12), generator=g)
    labels = (ids[:, 1] < 25).long()

    class Data(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return len(ids)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"input_ids": ids[i], "labels": labels[i]}

    def fit(watched: bool) -> None:
        torch.manual_seed(0)
        config = transformers.BertConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
        )
        args = transformers.TrainingArguments(
            output_dir=tempfile.mkdtemp(), per_device_train_batch_size=32, num_train_epochs=EPOCHS,
            save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, logging_strategy="no",
        )  # fmt: skip
        cbs = [hf.TrainmedicCallback(tempfile.mkdtemp(), quiet=True)] if watched else []
        model = transformers.BertForSequenceClassification(config)
        transformers.Trainer(model=model, args=args, train_dataset=Data(), callbacks=cbs).train()

    return (imp, *_best(fit, repeats))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="lightning,keras,hf")
    parser.add_argument("--no-header", action="store_true")
    a = parser.parse_args()
    torch.set_num_threads(1)
    if not a.no_header:
        print(
            f"python {sys.version.split()[0]}, torch {torch.__version__}, 1 torch thread, {a.repeats} pairs"
        )
        print(f"{'framework':<18} {'import s':>9} {'bare s':>8} {'watched s':>10} {'best':>6} {'median':>7}")
    benches = {"lightning": bench_lightning, "keras": bench_keras, "hf": bench_hf}
    for name in a.only.split(","):
        try:
            imp, bare, watched, bare_med, watched_med = benches[name](a.repeats)
        except ImportError as e:
            print(f"{name:<18} skipped ({e})")
            continue
        label = f"keras-{os.environ['KERAS_BACKEND']}" if name == "keras" else name
        print(
            f"{label:<18} {imp:9.2f} {bare:8.2f} {watched:10.2f} {watched / bare:6.2f} "
            f"{watched_med / bare_med:7.2f}",
            flush=True,
        )
        if name == "keras" and os.environ["KERAS_BACKEND"] != "tensorflow":
            if importlib.util.find_spec("tensorflow") is None:
                print(f"{'keras-tensorflow':<18} skipped (tensorflow not installed)")
                continue
            env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
            cmd = [sys.executable, __file__, "--only", "keras", "--no-header", "--repeats", str(a.repeats)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            print(out.stdout.strip() or out.stderr[-500:], flush=True)


if __name__ == "__main__":
    main()
