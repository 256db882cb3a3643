"""A held-out split that skipped the training split's scaling: the classic "great training accuracy, poor
validation accuracy" bug where StandardScaler is fitted and applied to the training inputs only. The model's
logits spread several times wider on the raw held-out inputs; that is a `train_test_mismatch`, not
overfitting. The same program with both splits scaled stays silent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import trainmedic as tm


def _program(run_dir: Path, seed: int, scale_val: bool, clean_train_pass: bool) -> tm.Diagnosis:
    X, y = load_digits(return_X_y=True)
    xtr, xva, ytr, yva = train_test_split(
        X.astype(np.float32), y, test_size=0.4, stratify=y, random_state=seed
    )
    mu, sd = xtr.mean(0), xtr.std(0)
    sd[sd == 0] = 1.0
    xtr = (xtr - mu) / sd
    if scale_val:
        xva = (xva - mu) / sd
    Xtr, Xva, Ytr, Yva = torch.tensor(xtr), torch.tensor(xva), torch.tensor(ytr), torch.tensor(yva)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    run = tm.watch(model, opt, run_dir=run_dir, quiet=True)
    g = torch.Generator().manual_seed(seed)
    for _ in range(15):
        model.train()
        perm = torch.randperm(len(Xtr), generator=g)
        for i in range(0, len(Xtr), 32):
            idx = perm[i : i + 32]
            out = model(Xtr[idx])
            loss = nn.functional.cross_entropy(out, Ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(loss=loss, outputs=out.detach(), targets=Ytr[idx])
        model.eval()
        with torch.no_grad():
            run.evaluate("val", targets=Yva, outputs=model(Xva))
            if clean_train_pass:
                run.evaluate("train", targets=Ytr, outputs=model(Xtr))
    run.close()
    return tm.diagnose(run_dir)


@pytest.mark.parametrize("clean_train_pass", [False, True], ids=["running", "clean-pass"])
@pytest.mark.parametrize("seed", [0, 1])
def test_unscaled_validation_split_is_a_mismatch(tmp_path: Path, seed: int, clean_train_pass: bool) -> None:
    d = _program(tmp_path / "bug", seed, scale_val=False, clean_train_pass=clean_train_pass)
    f = d.by_code("train_test_mismatch")
    assert f and f[0].is_problem and f[0].evidence["rule"] == "output_scale", d.findings
    assert f[0].evidence["ratio"] >= 4.0 and "scale" in f[0].message
    assert "overfitting" not in {x.code for x in d.findings if x.is_problem}
    fixed = _program(tmp_path / "fixed", seed, scale_val=True, clean_train_pass=clean_train_pass)
    assert not [x for x in fixed.findings if x.is_problem], fixed.findings


def test_output_scale_matches_a_naive_computation_without_blas(monkeypatch: pytest.MonkeyPatch) -> None:
    """The logits' spread, against the definition; computed with ufunc reductions only: a BLAS dot of a few
    thousand values wakes OpenBLAS' thread pool, whose spinning threads doubled the recorder's CPU time."""
    from trainmedic.running import output_scale

    rng = np.random.default_rng(0)
    o = (rng.normal(size=(1078, 10)) * 3 + 5).astype(np.float32)
    naive = float(np.sqrt(np.mean(np.var(o.astype(np.float64), axis=1))))

    def no_blas(*a: object, **k: object) -> None:
        raise AssertionError("output_scale must not call BLAS")

    monkeypatch.setattr(np, "dot", no_blas)
    monkeypatch.setattr(np, "matmul", no_blas)
    monkeypatch.setattr(np, "vdot", no_blas)
    # 1,078 rows: every 4th is read (SCALE_ROWS), exactly; a few % from the whole split's spread
    sample = o[::4].astype(np.float64)
    assert output_scale(o) == pytest.approx(float(np.sqrt(np.mean(np.var(sample, axis=1)))), rel=1e-6)
    assert output_scale(o) == pytest.approx(naive, rel=0.05)
    assert output_scale(o[:500]) == pytest.approx(
        float(np.sqrt(np.mean(np.var(o[:500].astype(np.float64), axis=1)))), rel=1e-6
    )  # up to 2 x SCALE_ROWS rows: all of them
    z = rng.normal(size=500) * 4
    assert output_scale(z) == pytest.approx(float(np.sqrt(np.mean(z**2))) / 2, rel=1e-9)
    assert output_scale(rng.uniform(size=(50, 3))) is None  # probabilities have no scale to compare
