"""Where runs happen: kill -9, the accelerator (sync-free) path forced on the CPU, AMP, torch.compile, GANs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _recorder_helpers import Reference, close, digits, mlp, params_equal, train, watched
from torch import nn

import trainmedic as tm


def test_kill_9_keeps_the_run_readable_and_loses_at_most_one_flush_interval(tmp_path: Path) -> None:
    flush_steps = 10
    script = textwrap.dedent(
        f"""
        import sys, torch
        from torch import nn
        import trainmedic as tm
        torch.set_num_threads(1)
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        run = tm.watch(model, opt, run_dir={str(tmp_path / "run")!r}, quiet=True, every=5,
                       flush_secs=1e9, flush_steps={flush_steps})
        step = 0
        while True:
            x = torch.randn(16, 8)
            opt.zero_grad(); loss = model(x).pow(2).mean(); loss.backward(); opt.step(); run.log(loss=loss)
            print(step, flush=True)
            step += 1
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    last = -1
    deadline = time.monotonic() + 120
    while last < 57 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        last = int(line)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert last >= 57, "the training subprocess did not get going"
    r = tm.open_run(tmp_path / "run")
    loss = r.scalar("loss")
    assert r.meta["status"] == "running"
    assert len(loss) >= last + 1 - flush_steps - 1
    assert list(loss.steps) == list(range(len(loss)))
    assert r.layer_stat("grad_norm").values.shape[1] == 2
    r.close()
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    run = tm.watch(
        model, opt, run_dir=tmp_path / "run", resume=True, quiet=True
    )  # the dead owner's lock is stale
    assert len(loss) <= run.step <= len(loss) + 1  # the flush ran in step 50's hook, before its log()
    run.close()


def test_sync_free_accelerator_path_records_the_same_values(tmp_path: Path, monkeypatch: Any) -> None:
    """``_host_check=False`` (what CUDA runs use) keeps per-step values on the device until a flush."""
    X, y = digits(256)
    results = {}
    syncs: list[str] = []

    def no_sync(kind: str) -> Any:
        def read(self: torch.Tensor) -> float:
            syncs.append(kind)
            return 0.0

        return read

    for host in (True, False):
        torch.manual_seed(0)
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        d = tmp_path / str(host)
        run = watched(model, opt, d, every=2, flush_secs=1e9, flush_steps=10**9)
        run._host_check = host
        if not host:
            monkeypatch.setattr(torch.Tensor, "item", no_sync("item"))  # no per-step reads of device values
            monkeypatch.setattr(torch.Tensor, "__float__", no_sync("float"))
            monkeypatch.setattr(torch.Tensor, "tolist", no_sync("tolist"))
        train(model, opt, X[:192], y[:192], run=run) if host else _train_no_eval(model, opt, X, y, run)
        if not host:
            monkeypatch.undo()
            assert not syncs
            # loss and grad_norm (its per-parameter norms) of 3 steps wait on the device
            assert len(run._pending_scalars) + len(run._pending_norms) == 2 * 3
        run.close()
        results[host] = tm.open_run(d)
    a, b = results[True], results[False]
    for name in ("loss", "grad_norm"):
        assert list(a.scalar(name).steps) == list(b.scalar(name).steps)
        assert close(a.scalar(name).values, b.scalar(name).values, rtol=1e-6)
    assert close(a.layer_stat("update_ratio").values, b.layer_stat("update_ratio").values, rtol=1e-6)


def _train_no_eval(model: nn.Module, opt: Any, X: torch.Tensor, y: torch.Tensor, run: Any) -> None:
    for i in range(0, 192, 64):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(X[i : i + 64]), y[i : i + 64])
        loss.backward()
        opt.step()
        run.log(loss=loss)


def test_live_nonfinite_on_the_sync_free_path_fires_at_flush(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = watched(model, opt, tmp_path)
    run._host_check = False
    for step in range(6):
        opt.zero_grad()
        x = torch.randn(8, 4) * (float("inf") if step == 3 else 1.0)
        loss = model(x).pow(2).mean()
        loss.backward()
        opt.step()
        run.log(loss=loss)
    assert not run.findings
    run.flush()
    assert [f.code for f in run.findings] == ["nonfinite"] and run.findings[0].step == 3
    run.close()


def test_amp_bfloat16_autocast_with_grad_scaler_records_unscaled_gradients(tmp_path: Path) -> None:
    X, y = digits(256)
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    run = watched(model, opt, tmp_path, every=1)
    ref = Reference(run, model, opt)
    for i in range(0, 256, 64):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(X[i : i + 64]), y[i : i + 64])
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        run.log(loss=loss)
    run.close()
    r = tm.open_run(tmp_path)
    assert r.meta["amp"]["grad_scaler"] is True and r.meta["amp"]["autocast"] == "torch.bfloat16"
    gn = r.scalar("grad_norm").values
    assert close(gn, ref.global_grad, rtol=1e-4)
    assert gn.max() < 100, "gradients were recorded before unscaling"
    assert not r.events("internal_error")


@pytest.mark.slow
def test_compiled_models_after_and_before_watch(tmp_path: Path) -> None:
    X, y = digits(128)
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = watched(model, opt, tmp_path / "after", every=1)
    compiled = torch.compile(model)
    train(compiled, opt, X, y, run=run)
    run.close()
    r = tm.open_run(tmp_path / "after")
    assert len(r.scalar("grad_norm")) == 2 and len(r.layer_stat("grad_norm").steps) == 2
    assert not r.events("internal_error")

    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    compiled = torch.compile(model)
    run = watched(compiled, opt, tmp_path / "before", every=1)
    train(compiled, opt, X, y, run=run)
    run.close()
    r = tm.open_run(tmp_path / "before")
    assert r.meta["compiled"] == ["model"] and "compiled before watch" in r.meta["notes"][0]
    assert len(r.scalar("grad_norm")) == 2 and len(r.layer_stat("weight_norm").steps) == 2


def test_gan_two_models_two_optimizers(tmp_path: Path) -> None:
    """G and D: prefixed signals, per-layer statistics of both (D steps first), one monitor history each."""
    torch.manual_seed(0)
    G = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    D = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.SGD(D.parameters(), lr=1e-2)
    run = tm.watch(
        {"generator": G, "discriminator": D},
        {"discriminator": opt_d, "generator": opt_g},
        run_dir=tmp_path,
        quiet=True,
        every=5,
    )
    bce = nn.BCEWithLogitsLoss()
    for _ in range(20):
        real = torch.randn(32, 2) + 3
        fake = G(torch.randn(32, 4))
        opt_d.zero_grad()
        d_loss = bce(D(real), torch.ones(32, 1)) + bce(D(fake.detach()), torch.zeros(32, 1))
        d_loss.backward()
        opt_d.step()
        opt_g.zero_grad()
        g_loss = bce(D(fake), torch.ones(32, 1))
        g_loss.backward()
        opt_g.step()
        run.log(d_loss=d_loss, g_loss=g_loss)
    run.close()
    r = tm.open_run(tmp_path)
    for sig in ("generator/grad_norm", "discriminator/grad_norm", "generator/beta1", "discriminator/lr"):
        assert r.has_scalar(sig), (sig, r.scalar_names)
    assert len(r.scalar("generator/grad_norm")) == 20 and len(r.scalar("d_loss")) == 20
    gn = r.layer_stat("grad_norm")
    assert list(gn.steps) == [0, 5, 10, 15]
    assert {lay.split("/")[0] for lay in gn.layers} == {"generator", "discriminator"}
    assert (gn.values > 0).all(), "every layer of both models is measured at each captured step"
    assert set(r.layer_stats["act_mean"]) == {"generator/1", "discriminator/1"}
    acts = r.layer_stat("act_mean")
    # a capture starts after the primary (first) optimizer's step: the last one only saw D's forward
    assert list(acts.steps) == [0, 5, 10, 15, 20]
    assert np.isfinite(acts.values[:4]).all()


def test_weights_identical_with_every_statistic_on_gan_and_cnn(tmp_path: Path) -> None:
    from _recorder_helpers import cnn

    X, y = digits(128)
    torch.manual_seed(0)
    bare = cnn()
    bopt = torch.optim.SGD(bare.parameters(), lr=0.1, momentum=0.9)
    train(bare, bopt, X, y)
    torch.manual_seed(0)
    model = cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    run = watched(model, opt, tmp_path, every=1)
    train(model, opt, X, y, run=run)
    run.close()
    assert params_equal(bare, model)
