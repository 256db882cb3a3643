"""Sharded and replicated training (FSDP2 ``fully_shard`` and DDP; gloo, 2 CPU processes) watched at the
defaults: training is bit-identical to the unwatched run, the recorded gradient norm is ``clip_grad_norm_``'s,
per-layer norms are the whole tensors' (shard partial sums combined), rank 0 alone writes, and the diagnosis is
the single-process twin's (the same model, seed and global batches in one process).

Scenarios: ``plain`` (no injected fault; 5 epochs on 384 digits, which the diagnosis finds overfit and
short of accuracy, a non-trivial set of codes to match) and ``dead`` (dead ReLUs from a -8 bias)."""

from __future__ import annotations

import gc
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _recorder_helpers import digits
from torch import nn

import trainmedic as tm
from trainmedic.cadence import LogCadence

WORLD = 2
GLOBAL_BATCH = 32
EPOCHS = 5  # 12 steps an epoch: 60 steps, a sync at step 50 and one at close
N_TRAIN = 384


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _model(scenario: str) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10))
    if scenario == "dead":  # every first-layer unit starts (and stays) below zero: dead ReLUs
        with torch.no_grad():
            model[0].bias.fill_(-8.0)
    return model


def _rows(step_in_epoch: int, rank: int, world: int) -> slice:
    """This rank's part of a global batch (world 1: the whole batch)."""
    per = GLOBAL_BATCH // world
    start = step_in_epoch * GLOBAL_BATCH + rank * per
    return slice(start, start + per)


def train(
    mode: str, scenario: str, watched: bool, run_dir: str | None, rank: int = 0, world: int = 1
) -> dict[str, Any]:
    """One run: ``mode`` is ``fsdp``, ``ddp`` or ``single`` (the twin). Returns the per-step reference
    ``clip_grad_norm_`` values, per-layer gradient norms at the capture steps and the final full weights."""
    X, y = digits(512)
    Xtr, ytr, Xva, yva = X[:N_TRAIN], y[:N_TRAIN], X[N_TRAIN:], y[N_TRAIN:]
    model = _model(scenario)
    layers = [m for m in model if isinstance(m, nn.Linear)]
    net: nn.Module = model
    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for m in layers:
            fully_shard(m)
        fully_shard(model)
    elif mode == "ddp":
        net = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    run = tm.watch(net, opt, run_dir=run_dir, quiet=True, overwrite=True) if watched else None

    def full(t: torch.Tensor) -> torch.Tensor:
        return t.full_tensor() if hasattr(t, "full_tensor") else t

    gn: list[float] = []
    layer_gn: dict[int, list[float]] = {}
    step = 0
    for _ in range(EPOCHS):
        for i in range(N_TRAIN // GLOBAL_BATCH):
            rows = _rows(i, rank, world)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(Xtr[rows]), ytr[rows])
            loss.backward()
            # max_norm=inf: clip_grad_norm_ scales by 1.0, the weights stay those of an unclipped run
            gn.append(float(torch.nn.utils.clip_grad_norm_(net.parameters(), float("inf"))))
            if watched and step % 10 == 0:  # the default schedule's capture steps (0, 10, ...)
                layer_gn[step] = [
                    float(
                        torch.linalg.vector_norm(torch.stack([full(p.grad).norm() for p in m.parameters()]))
                    )
                    for m in layers
                ]
            opt.step()
            if run is not None:
                run.log(loss=loss)
            step += 1
        with torch.no_grad():
            net.eval()
            for split, Xs, ys in (("train", Xtr, ytr), ("val", Xva, yva)):
                part = slice(rank, None, world)  # each rank scores its share; evaluate gathers them
                out = net(Xs[part])
                if run is not None:
                    run.evaluate(split, ys[part], out, loss=nn.functional.cross_entropy(out, ys[part]))
            net.train()
    if run is not None:
        run.close()
    weights = {n: full(p).detach().clone().numpy() for n, p in model.named_parameters()}
    return {"gn": np.array(gn), "layer_gn": layer_gn, "weights": weights}


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    results: dict[str, Any] = {}
    for mode in ("fsdp", "ddp"):
        for scenario, watched in (("plain", False), ("plain", True), ("dead", True)):
            tag = f"{mode}-{scenario}-{'watched' if watched else 'bare'}"
            results[tag] = train(mode, scenario, watched, str(Path(out) / tag), rank, world)
            gc.collect()
            dist.barrier()
    if rank == 0:
        flat: dict[str, np.ndarray] = {}
        for tag, res in results.items():
            flat[f"{tag}/gn"] = res["gn"]
            for s, v in res["layer_gn"].items():
                flat[f"{tag}/layer_gn/{s}"] = np.array(v)
            for n, w in res["weights"].items():
                flat[f"{tag}/w/{n}"] = w
        np.savez(Path(out) / "results.npz", **flat)
    del results
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    out = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(WORLD, _free_port(), str(out)), nprocs=WORLD, join=True)
    with np.load(out / "results.npz", allow_pickle=False) as f:
        res = {k: f[k] for k in f.files}
    return out, res


def _codes(d: Any) -> set[str]:
    return {f.code for f in d.findings if f.severity.value in ("warning", "error")}


@pytest.mark.ddp
@pytest.mark.parametrize("mode", ["fsdp", "ddp"])
def test_watched_training_is_bit_identical(sharded: tuple[Path, dict[str, np.ndarray]], mode: str) -> None:
    _, res = sharded
    bare = {k.split("/w/")[1]: v for k, v in res.items() if k.startswith(f"{mode}-plain-bare/w/")}
    watched = {k.split("/w/")[1]: v for k, v in res.items() if k.startswith(f"{mode}-plain-watched/w/")}
    assert bare and bare.keys() == watched.keys()
    for name in bare:
        assert np.array_equal(bare[name], watched[name]), name
    np.testing.assert_array_equal(res[f"{mode}-plain-bare/gn"], res[f"{mode}-plain-watched/gn"])


@pytest.mark.ddp
@pytest.mark.parametrize("mode", ["fsdp", "ddp"])
@pytest.mark.parametrize("scenario", ["plain", "dead"])
def test_grad_norms_are_clip_grad_norms(
    sharded: tuple[Path, dict[str, np.ndarray]], mode: str, scenario: str
) -> None:
    out, res = sharded
    tag = f"{mode}-{scenario}-watched"
    r = tm.open_run(out / tag)
    ref = res[f"{tag}/gn"]
    g = r.scalar("grad_norm")
    # the default schedule's steps (every step for 32, then every 2, …), each the step's clip_grad_norm_
    assert len(ref) == 60 and list(g.steps) == LogCadence().steps(60)[0]
    np.testing.assert_allclose(g.values, ref[g.steps], rtol=1e-5, atol=1e-7)
    lay = r.layer_stat("grad_norm")
    assert lay.layers == ["0", "2", "4"]
    assert list(lay.steps) == [0, 10, 20, 30, 40, 50]
    for i, s in enumerate(lay.steps):
        np.testing.assert_allclose(lay.values[i], res[f"{tag}/layer_gn/{s}"], rtol=1e-5, atol=1e-7)
    # per-layer weight norms are the whole tensors' (shard partial sums), and their sum of squares the total
    w = r.layer_stat("weight_norm")
    assert np.isfinite(w.values).all() and (w.values > 0).all()
    final = {k.split("/w/")[1]: v for k, v in res.items() if k.startswith(f"{tag}/w/")}
    assert r.meta["world_size"] == 2 and r.meta["rank"] == 0
    assert r.meta["distributed"]["sharded"] is (mode == "fsdp")
    assert not (out / tag / "rank1").exists()
    assert final  # the weights came back
    syncs = r.records("rank_sync")
    assert [s["step"] for s in syncs] == [50, 60]
    assert syncs[-1]["data"]["samples_total"] == [16 * 60, 16 * 60]
    assert sum(syncs[i]["data"]["loss_n"][1] for i in range(2)) == 60  # rank 1's losses reached rank 0


@pytest.mark.ddp
@pytest.mark.parametrize("mode", ["fsdp", "ddp"])
@pytest.mark.parametrize("scenario", ["plain", "dead"])
def test_diagnosis_matches_the_single_process_twin(
    sharded: tuple[Path, dict[str, np.ndarray]], mode: str, scenario: str, tmp_path: Path
) -> None:
    out, res = sharded
    twin = train("single", scenario, True, str(tmp_path / "twin"))
    # the twin trains on the same global batches: the same gradients up to float rounding
    np.testing.assert_allclose(twin["gn"], res[f"{mode}-{scenario}-watched/gn"], rtol=1e-3)
    d_twin = tm.diagnose(tmp_path / "twin")
    d_dist = tm.diagnose(out / f"{mode}-{scenario}-watched")
    assert _codes(d_dist) == _codes(d_twin)
    if scenario == "dead":
        assert "gradient_masking" in _codes(d_dist)
    assert not {c for c in _codes(d_dist) if c.startswith("rank_")}  # the ranks agree
