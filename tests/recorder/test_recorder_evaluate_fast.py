"""run.evaluate's fast path (one bincount, NumPy for the rest) and its batched writes; training metrics from
run.log(loss=, outputs=, targets=) stored per epoch as split ``train_running``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _recorder_helpers import digits
from torch import nn

import trainmedic as tm
from trainmedic.metrics import evaluate_classification
from trainmedic.metrics.classification import fast_confusion_matrix, metrics_dict
from trainmedic.running import RUNNING_SPLIT


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            assert a[key].keys() == b[key].keys(), key
            for k in a[key]:
                np.testing.assert_allclose(a[key][k], b[key][k], rtol=1e-12, err_msg=f"{key}/{k}")
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("k", [2, 3, 10, 40])
@pytest.mark.parametrize("n", [1, 7, 1000])
def test_fast_path_gives_the_checked_paths_numbers(k: int, n: int) -> None:
    g = torch.Generator().manual_seed(k * 1000 + n)
    y = torch.randint(0, k, (n,), generator=g)
    out = torch.randn(n, k, generator=g)
    cm = fast_confusion_matrix(y, out)
    assert cm is not None
    _same(evaluate_classification(y, out), metrics_dict(cm))
    idx = out.argmax(1)
    _same(evaluate_classification(y, idx, num_classes=k), metrics_dict(fast_confusion_matrix(y, idx, k)))


@pytest.mark.parametrize(
    ("targets", "outputs", "kw"),
    [
        (torch.tensor([0, 1, 2]), torch.randn(3, 2), {}),  # a target out of range
        (torch.tensor([0, -1, 1]), torch.randn(3, 2), {}),  # a negative target
        (torch.tensor([0, 1, 1]), torch.rand(3), {}),  # binary scores: the checked path decides
        (torch.tensor([0.0, 1.0, 1.0]), torch.randn(3, 2), {}),  # float targets
        (torch.tensor([0, 1, 1]), torch.randn(3, 2), {"num_classes": 3}),  # columns != num_classes
        (torch.tensor([0, 1, 1]), torch.tensor([0, 1, 5]), {"num_classes": 3}),  # a prediction out of range
    ],
)
def test_fast_path_leaves_the_unusual_to_the_checked_path(targets: Any, outputs: Any, kw: Any) -> None:
    assert fast_confusion_matrix(targets, outputs, **kw) is None


def test_evaluate_errors_stay_one_line(tmp_path: Path) -> None:
    run = tm.watch(nn.Linear(4, 3), None, run_dir=tmp_path / "r", quiet=True)
    with pytest.raises(tm.TrainmedicError, match="class indices in"):
        run.evaluate("val", torch.tensor([0, 1, 5]), torch.randn(3, 3))
    run.close()


def _loop(run: Any, model: nn.Module, opt: Any, X: Any, y: Any, epochs: int, **log: Any) -> None:
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        for i in range(0, 256, 32):
            opt.zero_grad()
            out = model(X[i : i + 32])
            loss = loss_fn(out, y[i : i + 32])
            loss.backward()
            opt.step()
            if log:
                run.log(loss=loss, outputs=out, targets=y[i : i + 32])
            else:
                run.log(loss=loss)
        with torch.no_grad():
            run.evaluate("train", y[:256], model(X[:256]))
            run.evaluate("val", y[256:], model(X[256:]))


def test_evaluations_cost_no_sqlite_transaction_of_their_own(tmp_path: Path) -> None:
    """Each epoch's two evaluations are buffered with the steps: no COMMIT inside the loop when no flush is due,
    everything committed at close."""
    torch.manual_seed(0)
    X, y = digits(384)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    run = tm.watch(model, opt, run_dir=tmp_path / "r", quiet=True, flush_secs=1e9, flush_steps=10**9)
    statements: list[str] = []
    assert run._writer is not None
    run._writer.con.set_trace_callback(statements.append)
    _loop(run, model, opt, X, y, epochs=6)
    commits_in_loop = sum(s.strip().upper().startswith("COMMIT") for s in statements)
    run.close()
    assert commits_in_loop == 0, statements[:5]  # 6 epochs x 2 evaluations, not one transaction each
    r = tm.open_run(tmp_path / "r")
    assert list(r.eval_series("val", "accuracy").steps) == list(range(6))
    assert r.confusion_matrix("train", 5).sum() == 256


def test_evaluations_flush_with_the_step_clock(tmp_path: Path) -> None:
    """With the default clock the rows reach the file with the next flush (what a kill -9 may lose: one
    flush interval)."""
    torch.manual_seed(0)
    X, y = digits(384)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    run = tm.watch(model, opt, run_dir=tmp_path / "r", quiet=True, flush_steps=8, flush_secs=1e9)
    _loop(run, model, opt, X, y, epochs=2)
    _loop(run, model, opt, X, y, epochs=1)  # 8 more steps: a flush
    with tm.open_run(tmp_path / "r") as r:  # read while the run is open
        assert len(r.eval_series("val", "accuracy")) >= 2
    run.close()


def test_log_outputs_targets_store_running_training_metrics_per_epoch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    X, y = digits(384)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    run = tm.watch(model, opt, run_dir=tmp_path / "r", quiet=True)
    loss_fn = nn.CrossEntropyLoss()
    expected: list[np.ndarray] = []
    losses: list[float] = []
    for _ in range(3):
        cm = np.zeros((10, 10), dtype=np.int64)
        total = 0.0
        for i in range(0, 256, 32):
            opt.zero_grad()
            out = model(X[i : i + 32])
            loss = loss_fn(out, y[i : i + 32])
            loss.backward()
            opt.step()
            run.log(loss=loss, outputs=out, targets=y[i : i + 32])
            np.add.at(cm, (y[i : i + 32].numpy(), out.argmax(1).numpy()), 1)
            total += float(loss.detach()) * 32
        expected.append(cm)
        losses.append(total / 256)
        with torch.no_grad():  # the epoch boundary: the first evaluation after folded batches
            run.evaluate("val", y[256:], model(X[256:]))
    run.close()
    r = tm.open_run(tmp_path / "r")
    assert RUNNING_SPLIT in r.splits and "train" not in r.splits
    acc = r.eval_series(RUNNING_SPLIT, "accuracy")
    assert list(acc.steps) == [0, 1, 2]
    for e, cm in enumerate(expected):
        np.testing.assert_array_equal(r.confusion_matrix(RUNNING_SPLIT, e), cm)
        assert acc.values[e] == pytest.approx(np.trace(cm) / cm.sum())
    np.testing.assert_allclose(r.eval_series(RUNNING_SPLIT, "loss").values, losses, rtol=1e-6)
    recs = r.records("classification", split=RUNNING_SPLIT)
    assert len(recs) == 3 and all(rec["data"]["running"] is True for rec in recs)
    assert list(r.scalar("loss").steps) == list(range(24))  # the loss is still logged per step


def test_running_metrics_boundaries_end_epoch_and_close(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = tm.watch(model, opt, run_dir=tmp_path / "r", quiet=True)
    X = torch.randn(64, 4)
    y = (X[:, 0] > 0).float()
    for epoch in range(3):
        for i in range(0, 64, 16):
            opt.zero_grad()
            out = model(X[i : i + 16])[:, 0]  # binary logits, float targets (BCE)
            loss = nn.functional.binary_cross_entropy_with_logits(out, y[i : i + 16])
            loss.backward()
            opt.step()
            run.log(loss=loss, outputs=out, targets=y[i : i + 16])
        if epoch < 2:
            run.end_epoch()
    run.close()  # the third epoch is stored at close
    r = tm.open_run(tmp_path / "r")
    assert list(r.eval_series(RUNNING_SPLIT, "accuracy").steps) == [0, 1, 2]
    assert r.confusion_matrix(RUNNING_SPLIT, 2).shape == (2, 2)
    assert r.confusion_matrix(RUNNING_SPLIT, 2).sum() == 64


def test_log_outputs_needs_both_and_valid_shapes(tmp_path: Path) -> None:
    run = tm.watch(nn.Linear(4, 3), None, run_dir=tmp_path / "r", quiet=True)
    with pytest.raises(tm.TrainmedicError, match="needs both"):
        run.log(loss=1.0, outputs=torch.randn(2, 3))
    with pytest.raises(tm.TrainmedicError, match="scores of shape"):
        run.log(outputs=torch.randn(2, 3), targets=torch.tensor([0, 1, 2]))
    run.close()


def test_deferred_metrics_are_the_same_numbers_returned_stored_and_read(tmp_path: Path) -> None:
    """run.evaluate buffers the confusion matrix: what it returns (derived on first read), the stored evals
    (derived at the flush for all buffered evaluations) and the record the reader expands are metrics_dict's
    numbers, bit for bit; the stored record itself holds only the matrix."""
    import copy
    import json
    import pickle

    from trainmedic.store.writer import classification_scalars

    g = torch.Generator().manual_seed(3)
    run = tm.watch(nn.Linear(4, 7), run_dir=tmp_path / "r", quiet=True)
    expected = []
    for epoch in range(4):
        y = torch.randint(0, 7, (300 + epoch,), generator=g)
        out = torch.randn(300 + epoch, 7, generator=g)
        res = run.evaluate("val", y, out, loss=0.5 + epoch, top5=0.9)
        ref = metrics_dict(fast_confusion_matrix(y, out))
        expected.append(ref)
        if epoch == 0:  # every way of reading the returned dict sees the full metrics
            assert json.loads(json.dumps(res)) == ref
        views = [dict(res), copy.deepcopy(res), pickle.loads(pickle.dumps(res)), {**res}]
        assert all(v == ref for v in views)
        assert res["scalars"] == ref["scalars"] and len(res) == len(ref) and list(res) == list(ref)
    run.close()
    r = tm.RunReader(tmp_path / "r")
    for name in ("accuracy", "f1_macro", "precision_weighted", "num_samples", "loss", "top5"):
        got = r.eval_series("val", name)
        want = [
            (0.5 + e if name == "loss" else 0.9 if name == "top5" else expected[e]["scalars"][name])
            for e in range(4)
        ]
        assert got.steps.tolist() == [0, 1, 2, 3] and got.values.tolist() == want, name
    recs = r.records("classification", "val")
    assert [rec["data"] for rec in recs] == expected
    raw = [
        json.loads(d)
        for (d,) in r.con.execute("SELECT data FROM records WHERE kind='classification'").fetchall()
    ]
    assert all(set(d) == {"task", "num_classes", "confusion_matrix", "compact", "derived"} for d in raw)
    cms = [np.asarray(d["confusion_matrix"]) for d in raw]
    keys = list(expected[0]["scalars"])
    assert classification_scalars(cms) == [[e["scalars"][k] for k in keys] for e in expected]


def test_an_evaluation_writes_one_record_and_its_loss(tmp_path: Path) -> None:
    """A classification evaluation stores its confusion matrix (one compact record) and the loss (one row);
    the eleven metrics are derived by the reader, and the eval_mode record is written when it changes (the
    output scale at the first four epochs, the powers of two and every 32nd)."""
    torch.manual_seed(0)
    X, y = digits(384)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    run = tm.watch(model, None, run_dir=tmp_path / "r", quiet=True)
    for _ in range(5):
        with torch.no_grad():
            out = model(X[256:])
            run.evaluate("val", y[256:], out, loss=nn.functional.cross_entropy(out, y[256:]))
    run.close()
    r = tm.open_run(tmp_path / "r")
    rows = dict(r.con.execute("SELECT kind, count(*) FROM records GROUP BY kind").fetchall())
    assert rows["classification"] == 5 and rows["eval_mode"] == 1
    per_epoch = r.con.execute("SELECT epoch, group_concat(name) FROM evals GROUP BY epoch").fetchall()
    assert per_epoch == [(e, "loss,output_scale" if e < 5 else "loss") for e in range(5)]
    assert r.splits == ["val"] and r.epochs("val") == [0, 1, 2, 3, 4]
    assert {"accuracy", "f1_macro", "num_samples", "loss"} <= set(r.eval_names("val"))
    assert r.eval_series("val", "num_samples").values.tolist() == [128.0] * 5
    assert r.eval_steps("val") == {e: 0 for e in range(5)}
    assert r.has_evidence()


def test_runs_with_stored_metric_rows_read_the_same(tmp_path: Path) -> None:
    """A run written with every metric as an evals row and records without "derived" (the earlier format,
    and importers) reads the same: no metric twice, the splits in the order of their first evaluation."""
    from trainmedic.store.writer import RunWriter, compact_classification_json

    cms = [np.array([[5, 1], [2, 7]]), np.array([[6, 0], [1, 8]])]
    w = RunWriter(tmp_path / "old")
    for epoch, cm in enumerate(cms):
        for split in ("train", "val"):
            for k, v in metrics_dict(cm)["scalars"].items():
                w.add_eval(split, epoch, 10 * epoch, k, v)
            w.add_eval(split, epoch, 10 * epoch, "loss", 1.0 / (epoch + 1))
            w.add_record_json("classification", compact_classification_json(cm), epoch, 10 * epoch, split)
    w.close()
    new = tm.watch(None, run_dir=tmp_path / "new", quiet=True)
    for epoch, cm in enumerate(cms):
        t = torch.tensor([i for i in range(2) for j in range(2) for _ in range(cm[i, j])])
        o = torch.tensor(
            [[0.0, 1.0] if j else [1.0, 0.0] for i in range(2) for j in range(2) for _ in range(cm[i, j])]
        )
        for split in ("train", "val"):
            new.evaluate(split, t, o, loss=1.0 / (epoch + 1), epoch=epoch)
    new.close()
    old_r, new_r = tm.open_run(tmp_path / "old"), tm.open_run(tmp_path / "new")
    assert old_r.splits == new_r.splits == ["train", "val"]
    assert old_r.eval_names("val") == new_r.eval_names("val")
    for name in old_r.eval_names("val"):
        a, b = old_r.eval_series("val", name), new_r.eval_series("val", name)
        assert a.steps.tolist() == b.steps.tolist() == [0, 1], name
        assert a.values.tolist() == b.values.tolist(), name
    assert [x["data"] for x in old_r.records("classification", "val")] == [
        x["data"] for x in new_r.records("classification", "val")
    ]


def test_the_one_function_evaluation_stores_what_the_general_path_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run.evaluate``'s common call (``evaluation.evaluate_fast``) and the general path (taken here because
    each call names its epoch) write the same rows: records, evaluation rows, split meta, in the same order,
    and return the same metrics — also with a dropout module left in training mode for one evaluation."""
    from trainmedic.recorder import evaluation

    taken: list[bool] = []
    original = evaluation.evaluate_fast

    def counted(*args: Any) -> Any:
        result = original(*args)
        taken.append(result is not None)
        return result

    monkeypatch.setattr(evaluation, "evaluate_fast", counted)
    torch.manual_seed(0)
    X, y = digits(384)
    stored = []
    for name, explicit in (("fast", False), ("general", True)):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(64, 32), nn.Dropout(0.1), nn.ReLU(), nn.Linear(32, 10))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        run = tm.watch(model, opt, run_dir=tmp_path / name, quiet=True)
        results = []
        for epoch in range(6):
            model.train()
            loss = nn.functional.cross_entropy(model(X[:256]), y[:256])
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(loss=loss)
            model.train(epoch == 2)  # one evaluation scored in training mode
            with torch.no_grad():
                for split, xs, ys in (("train", X[:256], y[:256]), ("val", X[256:], y[256:])):
                    out = model(xs)
                    kw = {"epoch": epoch} if explicit else {}
                    res = run.evaluate(split, ys, out, loss=nn.functional.cross_entropy(out, ys), **kw)
                    results.append(res["scalars"])
        run.close()
        r = tm.open_run(tmp_path / name)
        stored.append(
            (
                results,
                r.con.execute("SELECT kind, epoch, step, split, data FROM records ORDER BY id").fetchall(),
                r.con.execute("SELECT epoch, step, split, name, value FROM evals ORDER BY rowid").fetchall(),
                {k: v for k, v in r.meta.items() if k.startswith("split/") or k in ("steps", "epochs")},
            )
        )
    fast, general = stored
    assert taken == [True] * 12  # the first run took the one-function path each time, the second never
    assert fast[0] == general[0]
    assert fast[1] == general[1] and sum(1 for row in fast[1] if row[0] == "eval_mode") == 6
    assert fast[2] == general[2] and fast[3] == general[3]
