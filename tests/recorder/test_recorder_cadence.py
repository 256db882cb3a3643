"""The default cadence is a pure function of the step: the same seeded run records the same steps, also on a
loaded machine, and gets the same diagnosis; captures are spread over the whole run (trainmedic/cadence.py)."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _recorder_helpers import digits
from torch import nn

import trainmedic as tm
from trainmedic.cadence import FixedCadence, LogCadence


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.Tanh(), nn.Linear(64, 10))


def _train(d: Path, epochs: int = 22, lr: float = 3e-3, **opts: Any) -> Any:
    """A seeded digits run: 15 steps per epoch, train and val evaluated each epoch."""
    torch.manual_seed(0)
    X, y = digits(1200)
    Xtr, ytr, Xva, yva = X[:960], y[:960], X[960:], y[960:]
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    run = tm.watch(model, opt, run_dir=d, overwrite=True, quiet=True, **opts)
    g = torch.Generator().manual_seed(1)
    for _ in range(epochs):
        perm = torch.randperm(len(Xtr), generator=g)
        for i in range(0, len(Xtr), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            loss = loss_fn(model(Xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            run.log(loss=loss)
        with torch.no_grad():
            run.evaluate("train", ytr, model(Xtr), loss=loss_fn(model(Xtr), ytr))
            run.evaluate("val", yva, model(Xva), loss=loss_fn(model(Xva), yva))
    run.close()
    return tm.open_run(d)


def _recorded(r: Any) -> dict[str, Any]:
    """Every signal's recorded steps (and values), per-step and per-layer, plus the per-epoch evaluations."""
    out: dict[str, Any] = {}
    for name in r.scalar_names:
        s = r.scalar(name)
        out[f"scalar/{name}"] = (list(map(int, s.steps)), np.asarray(s.values))
    for stat in r.layer_stats:
        ls = r.layer_stat(stat)
        out[f"layer/{stat}"] = (list(map(int, ls.steps)), np.asarray(ls.values))
    for split in r.splits:
        acc = r.eval_series(split, "accuracy")
        out[f"eval/{split}"] = (list(map(int, acc.steps)), np.asarray(acc.values))
    return out


def _burn() -> None:  # pragma: no cover - runs in the hog processes
    x = 0
    while True:
        x += 1


def test_same_seeded_run_records_the_same_steps_beside_a_cpu_hog(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    quiet = _train(tmp_path / "quiet")
    ctx = multiprocessing.get_context("fork")
    hogs = [ctx.Process(target=_burn, daemon=True) for _ in range(max(2, os.cpu_count() or 2))]
    for h in hogs:
        h.start()
    try:
        loaded = _train(tmp_path / "loaded")
    finally:
        for h in hogs:
            h.terminate()
        for h in hogs:
            h.join(5)
    a, b = _recorded(quiet), _recorded(loaded)
    assert sorted(a) == sorted(b)
    assert {"scalar/loss", "scalar/grad_norm", "layer/grad_norm", "layer/act_dead"} <= set(a)
    for key in a:
        assert a[key][0] == b[key][0], key  # identical recorded steps, signal by signal
        if key == "scalar/wall_time":  # the clock itself: its steps are fixed, its values are the load's
            continue
        np.testing.assert_allclose(a[key][1], b[key][1], rtol=1e-5, equal_nan=True, err_msg=key)
    assert quiet.meta["cadence"] == loaded.meta["cadence"]
    da, db = tm.diagnose(tmp_path / "quiet"), tm.diagnose(tmp_path / "loaded")
    assert [(f.code, f.severity) for f in da.findings] == [(f.code, f.severity) for f in db.findings]


def test_330_step_run_has_per_layer_statistics_in_its_last_tenth(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    r = _train(tmp_path / "run", epochs=22)  # 22 epochs x 15 steps = 330 steps
    assert r.meta["steps"] == 330
    for stat in ("grad_norm", "weight_norm", "update_ratio", "act_mean", "act_dead"):
        steps = list(map(int, r.layer_stat(stat).steps))
        assert steps[0] == 0 and steps[-1] >= 297, (stat, steps)
        assert len(steps) >= 20, (stat, steps)
    gn = list(map(int, r.scalar("grad_norm").steps))
    assert (
        gn[-1] >= 297 and gn[:32] == list(range(32)) and gn[32:34] == [32, 34]
    )  # every step early, then spreading
    grad_steps, cap_steps = LogCadence(10).steps(330)
    assert gn == grad_steps and list(map(int, r.layer_stat("grad_norm").steps)) == cap_steps
    assert r.meta["cadence"]["schedule"] == "log"


def test_known_total_steps_capture_the_last_step(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    r = _train(tmp_path / "run", epochs=5, total_steps=75)  # 75 steps; 74 is no multiple of 10
    for stat in ("grad_norm", "act_mean"):
        assert int(r.layer_stat(stat).steps[-1]) == 74, stat
    assert int(r.scalar("grad_norm").steps[-1]) == 74
    assert r.meta["cadence"]["last_step"] == 74


@pytest.mark.parametrize("cadence", [LogCadence(10), LogCadence(3, last=1000), FixedCadence(4, 10, last=97)])
def test_next_steps_agree_with_membership(cadence: Any) -> None:
    """The hooks' short path skips to ``next_work`` / ``next_capture``: they must land on the next member."""
    grads = [s for s in range(6000) if cadence.grad(s)]
    caps = [s for s in range(6000) if cadence.capture(s)]
    assert set(caps) <= set(grads)
    for seq, nxt in ((grads, cadence.next_work), (caps, cadence.next_capture)):
        for a, b in zip(seq, seq[1:]):
            for s in (a, (a + b) // 2, b - 1):
                if a <= s < b:
                    assert nxt(s) == b, (s, a, b)


def test_log_cadence_spreads_captures_over_long_runs() -> None:
    c = LogCadence(10)
    for stop in (50, 330, 1000, 5000, 20_000, 200_000):
        _, caps = c.steps(stop)
        assert caps[0] == 0
        assert stop - caps[-1] <= max(10, stop // 10), (stop, caps[-1])  # the last capture in the last 10%
    _, caps = c.steps(200_000)
    assert 150 <= len(caps) <= 260, len(caps)  # ~20 per doubling of the run: cost falls as the run grows


def test_watch_options_are_explicit_keywords(tmp_path: Path) -> None:
    """tm.watch documents its options as typed keywords: a typo is a TypeError at the call, not an unrecorded run."""
    import inspect

    params = inspect.signature(tm.watch).parameters
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    run_params = set(inspect.signature(tm.Run.__init__).parameters) - {"self", "run_dir"}
    assert run_params <= set(params), run_params - set(params)  # every Run option is reachable from tm.watch
    with pytest.raises(TypeError, match="evry"):
        tm.watch(nn.Linear(2, 2), None, run_dir=tmp_path / "r", evry=5)  # type: ignore[call-arg]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("every", "last"), [(10, None), (10, 329), (1, 1000), (7, None), (10, 65535)])
def test_log_cadence_tables_answer_as_the_schedule_arithmetic(every: int, last: int | None) -> None:
    """The default cadence answers its first TABLE_STEPS steps from tables (cheaper per hook call) and later
    steps by the octave arithmetic: both give the same steps, also across the table's end."""
    from trainmedic.cadence import LogCadence, _Geometric

    c = LogCadence(every, last)
    caps = _Geometric(every, c.CAPTURES_PER_OCTAVE, every * c.MAX_CAPTURE_FACTOR)
    grads = _Geometric(1, c.GRAD_DENSE, c.GRAD_MAX_EVERY)
    h = c.TABLE_STEPS
    for s in [*range(3000), *range(h - 2000, h + 2000), *range(h, 40 * h, 997)]:
        cap = s == last or caps.contains(s)
        nc = caps.next_after(s)
        nc = last if last is not None and s < last < nc else nc
        got = (c.capture(s), c.grad(s), c.next_capture(s), c.next_work(s))
        assert got == (cap, grads.contains(s) or cap, nc, min(grads.next_after(s), nc)), s
