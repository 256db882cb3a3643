"""torch.distributed (gloo, 2 CPU processes): rank 0 records, ``run.evaluate`` gathers every rank's shard."""

from __future__ import annotations

import gc
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import trainmedic as tm


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, run_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    ddp_model = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp_model.parameters(), lr=0.1)
    run = tm.watch(ddp_model, optimizer, run_dir=run_dir, quiet=True, every=2, overwrite=True)
    g = torch.Generator().manual_seed(100 + rank)
    X = torch.randn(40 + 10 * rank, 6, generator=g)  # uneven shards: 40 and 50 samples
    y = (X[:, 0] > 0).long() + (X[:, 1] > 1).long()
    for _ in range(2):
        for i in range(0, 40, 10):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(ddp_model(X[i : i + 10]), y[i : i + 10])
            loss.backward()
            optimizer.step()
            run.log(loss=loss)
        with torch.no_grad():
            run.evaluate("train", y, ddp_model(X))
    run.close()
    del ddp_model, optimizer
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.ddp
def test_ddp_two_processes_rank0_records_and_evaluate_gathers(tmp_path: Path) -> None:
    run_dir = tmp_path / "ddp"
    mp.spawn(_worker, args=(2, _free_port(), str(run_dir)), nprocs=2, join=True)
    r = tm.open_run(run_dir)
    assert r.meta["world_size"] == 2 and r.meta["rank"] == 0
    assert list(r.scalar("loss").steps) == list(range(8))
    assert len(r.scalar("grad_norm")) == 8
    assert list(r.layer_stat("grad_norm").steps) == [0, 2, 4, 6]
    assert r.layer_stat("grad_norm").layers == ["0", "2"]  # DDP's wrapper is stripped from layer names
    cm = r.confusion_matrix("train")
    assert cm is not None and int(cm.sum()) == 90  # 40 + 50 samples gathered from both ranks
    assert r.meta["split/train"]["samples"] == 90
    assert r.epochs("train") == [0, 1]
    assert not (run_dir / "rank1").exists()
    assert np.isfinite(r.scalar("grad_norm").values).all()
