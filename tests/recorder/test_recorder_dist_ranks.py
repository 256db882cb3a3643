"""Cross-rank checks on real 2-process runs (gloo, CPU): one rank's NaN, one rank's diverging loss (DDP and
FSDP2), DDP replicas out of sync, uneven data per rank; a healthy run stays silent. And never hang: a rank
that is late to ``close`` meets trainmedic's sync timeout, and a rank that dies leaves rank 0's run readable."""

from __future__ import annotations

import gc
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _recorder_helpers import digits
from torch import nn

import trainmedic as tm
from trainmedic.cadence import LogCadence
from trainmedic.watch import UnrecordedRun

RANK_CODES = {"rank_nonfinite", "rank_divergence", "rank_desync", "uneven_rank_data"}
SCENARIOS = ("healthy", "nan", "diverge", "desync", "uneven", "fsdp-diverge", "fsdp-allranks")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _init(rank: int, world: int, port: int) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)


def _teardown() -> None:  # FIELD-NOTES: gc + barrier + destroy (plain destroy aborts a rank now and then)
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


def _wrap(scenario: str, model: nn.Module) -> nn.Module:
    if scenario.startswith("fsdp"):
        from torch.distributed.fsdp import fully_shard

        for m in model:
            if isinstance(m, nn.Linear):
                fully_shard(m)
        fully_shard(model)
        return model
    return nn.parallel.DistributedDataParallel(model)


def _run(
    scenario: str, rank: int, run_dir: str, steps: int = 60, dist_timeout: float = 120.0, resume: bool = False
) -> None:
    X, y = digits(512)
    X, y = X[:384], y[:384].clone()
    if scenario.endswith("diverge") and rank == 1:  # rank 1's shard is mislabeled
        y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(5))]
    torch.manual_seed(0)
    net = _wrap(scenario, nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)))
    lr = 0.2 if scenario == "desync" and rank == 1 else 0.1  # a rank-dependent learning rate: replicas drift
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    batch = 32 if scenario == "uneven" and rank == 1 else 16
    every_rank = scenario.endswith("allranks")
    with tm.watch(
        net,
        opt,
        run_dir=run_dir,
        quiet=True,
        overwrite=not resume,
        resume=resume,
        dist_timeout=dist_timeout,
        all_ranks=every_rank,
    ) as run:
        for step in range(steps):
            i = (step * 32 + rank * 16) % (384 - 32)
            xb, yb = X[i : i + batch].clone(), y[i : i + batch]
            if scenario == "nan" and rank == 1 and step == 37:
                xb[0, 0] = float("nan")
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(xb), yb)
            loss.backward()
            opt.step()
            run.log(loss=loss)
    del net, opt


def _worker(rank: int, world: int, port: int, out: str) -> None:
    _init(rank, world, port)
    for scenario in SCENARIOS:
        _run(scenario, rank, str(Path(out) / scenario))
        gc.collect()
        dist.barrier()
    # a resumed run: only rank 0 can read the stored step count; every rank takes it
    _run("healthy", rank, str(Path(out) / "healthy-resumed"), steps=60)
    dist.barrier()
    _run("healthy", rank, str(Path(out) / "healthy-resumed"), steps=20, resume=True)
    gc.collect()
    dist.barrier()
    _teardown()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ranks")
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return out


def _problems(run_dir: Path) -> dict[str, tm.Finding]:
    return {f.code: f for f in tm.diagnose(run_dir).findings if f.severity.value in ("warning", "error")}


@pytest.mark.ddp
def test_a_healthy_distributed_run_has_no_cross_rank_finding(runs: Path) -> None:
    d = tm.diagnose(runs / "healthy")
    assert not RANK_CODES & {f.code for f in d.findings}
    syncs = tm.open_run(runs / "healthy").records("rank_sync")
    assert [s["step"] for s in syncs] == [50, 60]
    assert max(syncs[-1]["data"]["param_diff"]) == 0.0  # DDP replicas are bit-identical


@pytest.mark.ddp
def test_nan_on_one_rank_names_that_rank_and_step(runs: Path) -> None:
    f = _problems(runs / "nan")["rank_nonfinite"]
    assert f.severity.value == "error"
    assert f.evidence["ranks"] == [1] and f.step == 37
    # DDP averaged rank 1's NaN gradient into rank 0's weights: rank 0's loss broke one step later
    assert f.evidence["first_nonfinite_step"] == [38, 37]
    assert not {"rank_divergence", "rank_desync", "uneven_rank_data"} & set(_problems(runs / "nan"))


@pytest.mark.ddp
@pytest.mark.parametrize("scenario", ["diverge", "fsdp-diverge"])
def test_a_rank_with_a_mislabeled_shard_diverges(runs: Path, scenario: str) -> None:
    problems = _problems(runs / scenario)
    f = problems["rank_divergence"]
    assert f.evidence["rank"] == 1 and f.evidence["ratio"] >= 1.5 and f.evidence["z"] >= 3
    assert not {"rank_nonfinite", "rank_desync", "uneven_rank_data"} & set(problems)


@pytest.mark.ddp
def test_ddp_replicas_that_drift_apart_are_found(runs: Path) -> None:
    problems = _problems(runs / "desync")
    f = problems["rank_desync"]
    assert f.evidence["rank"] == 1 and f.evidence["first_step"] == 50 and f.evidence["param_diff"][1] > 1e-3
    assert not {"rank_nonfinite", "uneven_rank_data"} & set(problems)


@pytest.mark.ddp
def test_uneven_data_per_rank_is_found(runs: Path) -> None:
    problems = _problems(runs / "uneven")
    f = problems["uneven_rank_data"]
    assert f.evidence["samples"] == [16 * 60, 32 * 60] and f.evidence["batch_max"] == 32
    assert not {"rank_nonfinite", "rank_desync"} & set(problems)


@pytest.mark.ddp
def test_all_ranks_writes_every_rank_with_the_global_norms(runs: Path) -> None:
    r0, r1 = tm.open_run(runs / "fsdp-allranks" / "rank0"), tm.open_run(runs / "fsdp-allranks" / "rank1")
    assert (r0.meta["rank"], r1.meta["rank"]) == (0, 1)
    g0, g1 = r0.scalar("grad_norm"), r1.scalar("grad_norm")
    assert list(g0.steps) == list(g1.steps) == LogCadence().steps(60)[0]  # the default schedule's steps
    np.testing.assert_array_equal(g0.values, g1.values)  # the reduced global norm, on both ranks
    assert not np.array_equal(r0.scalar("loss").values, r1.scalar("loss").values)  # each its own batches
    np.testing.assert_array_equal(r0.layer_stat("weight_norm").values, r1.layer_stat("weight_norm").values)


@pytest.mark.ddp
def test_a_resumed_distributed_run_continues_the_step_count_on_every_rank(runs: Path) -> None:
    r = tm.open_run(runs / "healthy-resumed")
    assert list(r.scalar("loss").steps) == list(range(80))
    syncs = r.records("rank_sync")
    assert [s["step"] for s in syncs] == [50, 60, 80]  # the second watch syncs at its close (step 80)
    assert syncs[-1]["data"]["steps"] == [80, 80]  # rank 1 counted from rank 0's stored 60
    assert syncs[-1]["data"]["loss_n"] == [20, 20]


# ---- never hang ------------------------------------------------------------------------------------
def _late_worker(rank: int, world: int, port: int, out: str, mode: str) -> None:
    _init(rank, world, port)
    run_dir = str(Path(out) / "run")
    torch.manual_seed(0)
    net = nn.parallel.DistributedDataParallel(nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    X, y = digits(64)
    t0 = time.monotonic()
    if mode == "rank0only" and rank == 1:  # the common `if rank == 0: run = tm.watch(...)`
        run = UnrecordedRun(None, RuntimeError("not watched"))
    else:
        run = tm.watch(net, opt, run_dir=run_dir, quiet=True, overwrite=True, dist_timeout=3.0)
    (Path(out) / f"watch{rank}.txt").write_text(f"{time.monotonic() - t0:.3f}")
    try:
        for step in range(20):
            if mode == "dead" and rank == 1 and step == 12:
                os._exit(3)  # a rank dies mid-run (OOM-killed, a node lost)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(X[rank::2]), y[rank::2])
            loss.backward()
            opt.step()
            run.log(loss=loss)
    except Exception as e:  # rank 0: gloo's own collective fails once the peer is gone
        (Path(out) / "rank0_error.txt").write_text(f"{type(e).__name__}: {e}")
        run.close(status="failed")
        os._exit(0)
    if mode == "late" and rank == 1:
        time.sleep(6)  # rank 1 is busy (a long evaluation) while rank 0 closes
    t0 = time.monotonic()
    run.close()
    (Path(out) / f"close{rank}.txt").write_text(f"{time.monotonic() - t0:.3f}")
    os._exit(0)  # the peer may be gone: no teardown collectives


def _launch(mode: str, out: Path) -> list[int | None]:
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_late_worker, args=(r, 2, port, str(out), mode)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    codes = [p.exitcode for p in procs]
    for p in procs:
        if p.is_alive():
            p.kill()
    return codes


@pytest.mark.ddp
def test_a_rank_late_to_close_meets_the_sync_timeout(tmp_path: Path) -> None:
    codes = _launch("late", tmp_path)
    assert codes == [0, 0]
    waited = float((tmp_path / "close0.txt").read_text())
    assert 2.5 <= waited < 60  # the 3 s timeout, not the 30 min of a default group
    r = tm.open_run(tmp_path / "run")
    assert r.meta["status"] == "closed" and r.meta["steps"] == 20
    ev = r.events("rank_sync_failed")
    assert len(ev) == 1 and "rank 0" in ev[0]["message"]
    assert list(r.scalar("loss").steps) == list(range(20))


@pytest.mark.ddp
def test_a_dead_rank_leaves_rank_0s_run_readable(tmp_path: Path) -> None:
    codes = _launch("dead", tmp_path)
    assert codes == [0, 3]
    assert (tmp_path / "rank0_error.txt").exists()
    r = tm.open_run(tmp_path / "run")
    assert r.meta["status"] == "failed"
    assert list(r.scalar("loss").steps) == list(range(12))  # every step before rank 1 died
    tm.diagnose(tmp_path / "run")  # and it is diagnosed


@pytest.mark.ddp
def test_watching_rank_0_alone_neither_hangs_nor_breaks_training(tmp_path: Path) -> None:
    codes = _launch("rank0only", tmp_path)
    assert codes == [0, 0]
    assert float((tmp_path / "watch0.txt").read_text()) < 30  # the handshake's wait (3 s here), then on
    r = tm.open_run(tmp_path / "run")
    assert r.meta["status"] == "closed"
    assert list(r.scalar("loss").steps) == list(range(20))
    assert (
        len(r.scalar("grad_norm")) == 20
    )  # DDP's gradients are all-reduced: rank 0's norm is the global one
    (ev,) = r.events("rank_sync_failed")
    assert "not called on all 2 ranks" in ev["message"]
    assert not r.records("rank_sync")
