"""The recorder on a CUDA device: the accelerator path (values stay on the device, one host copy per flush).

On CUDA ``Run._host_check`` is False: per-step scalars are kept as device tensors and moved to the host in one
batch per flush, so a training step never waits for the GPU. These tests check on real small runs that this
path records the same values as a naive plain-torch computation (MLP and CNN, AMP with a GradScaler, a
compiled model, ``run.evaluate`` on device tensors), that it never synchronizes with the device between
flushes, and that a watched run computes the same weights as an unwatched one. They skip without a GPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _recorder_helpers import Reference, close, cnn, digits, mlp, train, watched
from test_recorder_probes import ActivationReference, assert_matches_references
from torch import nn

import trainmedic as tm
from trainmedic.cadence import LogCadence

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

DEV = torch.device("cuda")
MODELS: dict[str, Callable[[], nn.Module]] = {"mlp": mlp, "cnn": cnn}


@pytest.fixture(autouse=True)
def exact_cuda_math() -> Iterator[None]:
    """TF32 off and deterministic cuDNN, so device results can be compared tightly; restored afterwards."""
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        (
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
            torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark,
        ) = saved


def cuda_digits(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    X, y = digits(n)
    return X.to(DEV), y.to(DEV)


def no_internal_errors(r: Any) -> None:
    """A probe that fails is caught by the recorder's guard and only recorded: make such failures visible."""
    errors = r.events("internal_error")
    assert not errors, "\n".join(
        f"{e['message']}\n{(e.get('data') or {}).get('traceback', '')}" for e in errors
    )


def steps_loop(
    model: nn.Module, opt: torch.optim.Optimizer, X: torch.Tensor, y: torch.Tensor, steps: int, run: Any
) -> None:
    """Plain training steps with nothing that reads a device value on the host (no float(loss), no .item())."""
    loss_fn = nn.CrossEntropyLoss()
    bs, n = 64, len(X)
    for s in range(steps):
        i = (s * bs) % (n - bs)
        opt.zero_grad()
        loss = loss_fn(model(X[i : i + bs]), y[i : i + bs])
        loss.backward()
        opt.step()
        if run is not None:
            run.log(loss=loss)


@pytest.mark.parametrize("arch", list(MODELS))
@pytest.mark.parametrize("every", [1, 3])
def test_cuda_probes_match_naive_torch(arch: str, every: int, tmp_path: Path) -> None:
    torch.manual_seed(0)
    X, y = cuda_digits(1024)
    model = MODELS[arch]().to(DEV)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    run = watched(model, opt, tmp_path, every=every)
    assert run._host_check is False  # the accelerator path: values stay on the device until a flush
    assert run._index is not None
    unit_dims = dict(zip(run._index.activations, run._index.activation_unit_dim))
    ref = Reference(run, model, opt)
    acts = ActivationReference(model, unit_dims)
    # 2 epochs of 16 steps: with every=1 the 32 buffered activation samples are computed inside the loop too
    losses = train(model, opt, X, y, epochs=2, run=run, before_step=lambda s: setattr(acts, "step", s))
    run.close()
    r = tm.open_run(tmp_path)
    no_internal_errors(r)
    assert r.meta["device"] == str(next(model.parameters()).device)

    assert_matches_references(r, losses, ref, acts, every, label=arch)
    lr = r.scalar("lr")
    assert len(lr) > 0 and np.all(lr.values == 0.05)

    split = r.eval_series("train", "accuracy")
    assert list(split.steps) == [0, 1]


@pytest.mark.parametrize("arch", list(MODELS))
@pytest.mark.parametrize(
    ("settings", "steps"),
    [({}, 600), ({"overhead_budget": 0.02}, 600), ({"every": 1}, 100)],
    ids=["default", "budget", "every1"],
)
def test_cuda_hot_path_never_syncs(arch: str, settings: dict[str, Any], steps: int, tmp_path: Path) -> None:
    """Between flushes a watched step launches kernels only: any device→host read raises in sync-debug mode.

    600 default steps cover the default schedule's octaves; with the opt-in budget, the overhead meter's first
    window and its re-thinning; 100 steps at every=1 cover
    a capture per step and three batched activation-statistics computations (32 samples each).
    """
    torch.manual_seed(0)
    X, y = cuda_digits(1024)
    model = MODELS[arch]().to(DEV)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps_loop(model, opt, X, y, 3, None)  # warm-up unwatched: cuBLAS/cuDNN handles, optimizer state
    torch.cuda.synchronize()
    run = watched(model, opt, tmp_path, flush_secs=1e9, flush_steps=10**9, **settings)
    torch.cuda.set_sync_debug_mode("error")
    try:
        steps_loop(model, opt, X, y, steps, run)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    flushes, pending = run._flushes, len(run._pending_scalars)
    run.close()
    r = tm.open_run(tmp_path)
    no_internal_errors(r)  # a sync inside a probe raises there, is caught by the guard and recorded here
    assert flushes == 0, "a flush inside the loop: the test would not isolate the per-step path"
    assert pending >= steps  # the loss (at least) of every step waited on the device until close()
    assert list(r.scalar("loss").steps) == list(range(steps))
    gn = r.scalar("grad_norm")
    assert gn.steps[0] == 0 and len(gn) >= steps // 10 and np.all(np.isfinite(gn.values))
    if settings.get("every") == 1:
        assert list(gn.steps) == list(range(steps))
        assert list(r.layer_stat("grad_norm").steps) == list(range(steps))
        assert list(r.layer_stat("act_mean").steps) == list(range(steps))
    elif settings:
        assert r.meta["cadence"]["checks"] >= 1  # the overhead meter measured a window inside the loop
    else:  # the default schedule: the same steps as on any machine
        grad_steps, cap_steps = LogCadence(10).steps(steps)
        assert list(gn.steps) == grad_steps
        assert list(r.layer_stat("grad_norm").steps) == cap_steps


def test_cuda_amp_grad_norm_is_unscaled(tmp_path: Path) -> None:
    """autocast fp16 + GradScaler: the recorded norm is that of the unscaled gradients; skipped steps are absent.

    The naive norm is taken from the *scaled* gradients right after backward and divided by the scale in force
    (a power of two: exact). A large initial scale makes the first steps overflow, so the scaler skips them.
    """
    torch.manual_seed(0)
    X, y = cuda_digits(1024)
    model = mlp().to(DEV)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**28)
    run = watched(model, opt, tmp_path, every=1)
    loss_fn = nn.CrossEntropyLoss()
    naive: list[float] = []
    skipped = 0
    for epoch in range(2):
        for i in range(0, len(X) - 63, 64):
            opt.zero_grad()
            with torch.autocast("cuda", dtype=torch.float16):
                loss = loss_fn(model(X[i : i + 64]), y[i : i + 64])
            scaler.scale(loss).backward()
            scale = scaler.get_scale()
            scaled = Reference._norm([p.grad for p in model.parameters() if p.grad is not None])
            scaler.step(opt)
            scaler.update()
            was_skipped = scaler.get_scale() < scale  # the scaler backs off exactly when it skipped
            assert was_skipped == (not math.isfinite(scaled)), (epoch, i, scaled, scale)
            if was_skipped:
                skipped += 1
            else:
                naive.append(scaled / scale)
            run.log(loss=loss)
    run.close()
    r = tm.open_run(tmp_path)
    no_internal_errors(r)
    assert skipped >= 1 and len(naive) >= 10, (skipped, len(naive))
    gn = r.scalar("grad_norm")
    assert list(gn.steps) == list(range(len(naive)))
    assert close(gn.values, naive, rtol=1e-4), (gn.values, naive)
    amp = r.meta["amp"]
    assert amp["grad_scaler"] is True and amp["autocast"] == "torch.float16", amp


@pytest.mark.parametrize("arch", list(MODELS))
def test_cuda_watched_run_computes_identical_weights(arch: str, tmp_path: Path) -> None:
    """Hooks only read: with every statistic on every step, the trained weights are bit-identical."""
    X, y = cuda_digits(512)

    def trained(run_dir: Path | None) -> nn.Module:
        torch.manual_seed(0)
        model = MODELS[arch]().to(DEV)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        run = watched(model, opt, run_dir, every=1) if run_dir is not None else None
        train(model, opt, X, y, epochs=2, run=run)
        if run is not None:
            run.close()
        return model

    bare, seen = trained(None), trained(tmp_path)
    no_internal_errors(tm.open_run(tmp_path))
    for (name, p), q in zip(bare.state_dict().items(), seen.state_dict().values()):
        assert torch.allclose(p, q, atol=0, rtol=0), name


def test_cuda_compiled_model_records_optimizer_signals(tmp_path: Path) -> None:
    """A model compiled after tm.watch: loss, global gradient norm and learning rate are all recorded."""
    try:
        torch.compile(lambda t: t * 2 + 1)(torch.ones(4, device=DEV))
    except Exception as e:  # no C compiler / Triton here: an environment limit, not trainmedic's
        pytest.skip(f"torch.compile does not work in this environment: {type(e).__name__}: {e}")
    torch.manual_seed(0)
    X, y = cuda_digits(512)
    model = mlp().to(DEV)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    run = watched(model, opt, tmp_path, every=5)
    ref = Reference(run, model, opt)
    compiled = torch.compile(model)
    loss_fn = nn.CrossEntropyLoss()
    losses: list[float] = []
    t0 = time.perf_counter()
    try:
        for _ in range(3):
            for i in range(0, len(X) - 63, 64):
                opt.zero_grad()
                loss = loss_fn(compiled(X[i : i + 64]), y[i : i + 64])
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                run.log(loss=loss)
            with torch.no_grad():  # scored with the eager module: no extra compiled graph for evaluation
                logits = model(X)
            run.evaluate("train", y, logits, loss=loss_fn(logits, y))
        run.close()
    finally:
        torch._dynamo.reset()
    seconds = time.perf_counter() - t0
    r = tm.open_run(tmp_path)
    no_internal_errors(r)
    n = len(losses)
    assert list(r.scalar("loss").steps) == list(range(n))
    assert close(r.scalar("loss").values, losses)
    gn = r.scalar("grad_norm")
    assert list(gn.steps) == list(range(n))
    assert close(gn.values, ref.global_grad, rtol=1e-4)
    lr = r.scalar("lr")
    assert len(lr) > 0 and lr.steps[0] == 0 and np.all(lr.values == 1e-3)
    assert list(r.layer_stat("grad_norm").steps) == list(range(0, n, 5))
    assert seconds < 60, f"compiling and training took {seconds:.0f} s"


def test_cuda_evaluate_matches_sklearn(tmp_path: Path) -> None:
    """run.evaluate on device logits, probabilities and class indices: sklearn's metrics on the CPU copies."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    torch.manual_seed(0)
    X, y = cuda_digits(1024)
    X_tr, y_tr, X_va, y_va = X[:768], y[:768], X[768:], y[768:]
    model = mlp().to(DEV)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = watched(model, opt, tmp_path)
    steps_loop(model, opt, X_tr, y_tr, 24, run)
    loss_fn = nn.CrossEntropyLoss()
    with torch.no_grad():
        logits = model(X_va)
        val_loss = loss_fn(logits, y_va)
    outputs = {"val": logits, "val_probs": logits.softmax(dim=1), "val_index": logits.argmax(dim=1)}
    for split, out in outputs.items():
        run.evaluate(split, y_va, out, loss=val_loss)
    run.close()
    r = tm.open_run(tmp_path)
    no_internal_errors(r)
    t, p = y_va.cpu().numpy(), logits.argmax(dim=1).cpu().numpy()
    labels = list(range(10))
    assert 0.2 < accuracy_score(t, p) < 1.0  # a partly trained model: both right and wrong predictions
    for split in outputs:
        np.testing.assert_array_equal(r.confusion_matrix(split), confusion_matrix(t, p, labels=labels))
        assert r.eval_series(split, "accuracy").values[-1] == pytest.approx(accuracy_score(t, p))
        for avg in ("macro", "micro", "weighted"):
            pr, rc, f1, _ = precision_recall_fscore_support(t, p, labels=labels, zero_division=0, average=avg)
            got = [r.eval_series(split, f"{m}_{avg}").values[-1] for m in ("precision", "recall", "f1")]
            assert got == pytest.approx([pr, rc, f1]), (split, avg)
        assert r.eval_series(split, "loss").values[-1] == pytest.approx(float(val_loss), rel=1e-6)
