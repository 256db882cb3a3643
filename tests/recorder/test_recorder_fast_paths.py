"""The recorder's cheaper paths record what the general paths record (issue 13): the CPU confusion matrix of
``run.evaluate``, the compact classification record's JSON, the per-step gradient norm read through NumPy, the
quantiles' one sort, the cadence tables built from ranges (in any order of questions), the new file's set-up
and the cached pyproject settings."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import trainmedic as tm
from trainmedic import settings
from trainmedic.cadence import LogCadence, _Geometric
from trainmedic.metrics.classification import fast_confusion_matrix
from trainmedic.probes.layers import LayerIndex
from trainmedic.probes.optimizer import OptimizerProbe
from trainmedic.recorder.evaluation import _NONFINITE, _host_confusion_matrix
from trainmedic.store.writer import compact_classification_json


@pytest.mark.parametrize("k", [2, 3, 10])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_host_confusion_matrix_is_fast_confusion_matrix(k: int, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(k)
    for n in (1, 7, 700):
        t = torch.randint(0, k, (n,), generator=g)
        o = torch.randn(n, k, generator=g, dtype=dtype)
        o[: n // 3, 0] = o[: n // 3, 1]  # ties: the first maximum wins in both
        for tt in (t, t.to(torch.int32), t.to(torch.uint8)):
            np.testing.assert_array_equal(_host_confusion_matrix(tt, o, None), fast_confusion_matrix(tt, o))
    bad = torch.randn(5, k, dtype=dtype)
    bad[2, 0] = float("nan")
    assert _host_confusion_matrix(torch.zeros(5, dtype=torch.long), bad, None) is _NONFINITE
    # anything else is left to the general path
    assert _host_confusion_matrix(torch.full((3,), k), torch.randn(3, k), None) is None  # label >= k
    assert _host_confusion_matrix(torch.full((3,), -1), torch.randn(3, k), None) is None
    assert _host_confusion_matrix(torch.zeros(3, dtype=torch.long), torch.randn(3, k), k + 1) is None
    assert _host_confusion_matrix(torch.zeros(3, dtype=torch.long), torch.randn(3), None) is None
    assert _host_confusion_matrix(torch.zeros(3, dtype=torch.bool), torch.randn(3, k), None) is None


def test_compact_classification_json_is_json_dumps() -> None:
    for cm in (np.array([[1, 2], [3, 4]]), np.zeros((3, 3), dtype=np.int64), np.array([[10**12, 0], [5, 7]])):
        for names in (None, ["a", 'b"c', "é"]):
            d: dict[str, Any] = {
                "task": "classification",
                "num_classes": int(cm.shape[0]),
                "confusion_matrix": cm.tolist(),
                "compact": True,
            }
            if names is not None:
                d["class_names"] = names
            assert compact_classification_json(cm, names) == json.dumps(d, allow_nan=False)


def test_evaluate_stores_what_the_checked_path_stores(tmp_path: Path) -> None:
    """The CPU fast path of run.evaluate against the general path (a numpy copy of the same values)."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    out = torch.randn(50, 3)
    y = torch.randint(0, 3, (50,))
    runs = []
    for name, targets, outputs in (("fast", y, out), ("general", y.numpy(), out.numpy())):
        run = tm.watch(
            model, torch.optim.SGD(model.parameters(), lr=0.1), run_dir=tmp_path / name, quiet=True
        )
        res = run.evaluate(
            "val", targets, outputs, loss=torch.tensor(0.5), class_names=["a", "b", "c"], extra=2.0
        )
        assert res["scalars"]["accuracy"] == pytest.approx(float((out.argmax(1) == y).float().mean()))
        run.close()
        runs.append(tm.open_run(tmp_path / name))
    a, b = runs
    assert a.eval_names("val") == b.eval_names("val")
    for n in a.eval_names("val"):
        np.testing.assert_array_equal(a.eval_series("val", n).values, b.eval_series("val", n).values)
    assert a.records("classification") == b.records("classification")
    assert a.records("eval_mode") == b.records("eval_mode")
    assert a.meta["split/val"] == b.meta["split/val"]


def _grads(model: nn.Module) -> OptimizerProbe:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = OptimizerProbe("optimizer", opt, LayerIndex.build({"model": model}))
    model(torch.randn(16, 8)).square().mean().backward()
    return probe


def test_gradient_norms_on_the_host_match_torch() -> None:
    """The global norm read as floats from one _foreach_norm, and the per-parameter norms a capture stores
    (0 for a parameter without a gradient), against torch's own norms."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 100), nn.ReLU(), nn.Linear(100, 3))
    probe = _grads(model)
    res = probe.grad_param_norms()
    assert res is not None and res[0] is None and len(res[1]) == 4
    expected = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert probe.global_norm_host_cached() == pytest.approx(float(expected), rel=1e-6)
    model[2].bias.grad = None  # a parameter without a gradient
    res = probe.grad_param_norms()
    assert res is not None and res[0] == [0, 1, 2]
    probe.snapshot_weights(True)
    row = probe.param_stats(True)
    assert row is not None and float(row[0, 3]) == 0.0
    torch.testing.assert_close(
        row[0, :3].float(), torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None])
    )


def test_host_quantiles_match_the_torch_path() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 100), nn.ReLU(), nn.Linear(100, 3))
    probe = _grads(model)
    host = probe.param_quantiles(True)
    probe._host_ok = False
    dev = probe.param_quantiles(False)
    assert host is not None and dev is not None
    torch.testing.assert_close(host.float(), dev.float())
    probe._host_ok = True
    model[0].bias.grad[3] = float("nan")  # on the host, that layer's gradient quantiles are NaN
    host = probe.param_quantiles(True)
    assert host is not None
    assert torch.isnan(host[1, :, 0]).all() and not torch.isnan(host[1, :, 1]).any()
    assert not torch.isnan(host[0]).any()


def test_cadence_tables_from_ranges_in_any_order() -> None:
    def members(g: _Geometric, stop: int) -> list[int]:  # the definition: next_after from 0
        out, s = [], 0
        while s < stop:
            out.append(s)
            s = g.next_after(s)
        return out

    for base, n, cap in [(1, 100, 16), (10, 20, 10240), (3, 7, 3), (1, 1, 1), (5, 20, 7)]:
        g = _Geometric(base, n, cap)
        for stop in (0, 1, 99, 100, 101, 1041, 70000):
            assert g.members(stop) == members(g, stop)
    rng = random.Random(0)
    for every, last in ((10, None), (1, 5000)):
        ref = LogCadence(every, last)
        answers = {
            s: (ref.grad(s), ref.capture(s), ref.next_work(s), ref.next_capture(s)) for s in range(80000)
        }
        cad = LogCadence(every, last)  # questions out of order, past the tables first
        for s in [70000, *rng.sample(range(80000), 3000)]:
            assert (cad.grad(s), cad.capture(s), cad.next_work(s), cad.next_capture(s)) == answers[s]


def test_pyproject_settings_follow_the_file(tmp_path: Path) -> None:
    p = tmp_path / "pyproject.toml"
    for v in ("0.5", "0.7", "0.5"):  # same size each time: the text decides, not the file's stat
        p.write_text(f"[tool.trainmedic]\nmin_accuracy = {v}\n")
        assert settings.load_thresholds(start=tmp_path).min_accuracy == float(v)
        settings._pyproject_settings(tmp_path)["min_accuracy"] = 0.1  # a caller's copy
        assert settings.load_thresholds(start=tmp_path).min_accuracy == float(v)


def test_new_run_file_is_durable_and_complete(tmp_path: Path) -> None:
    model = nn.Linear(3, 2)
    run = tm.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), run_dir=tmp_path / "r", quiet=True)
    w = run._writer
    assert w is not None
    assert w.con.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL after the set-up
    assert w.con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    run.close()
    r = tm.open_run(tmp_path / "r")
    assert r.meta["status"] == "closed" and r.meta["schema_version"] == 1
