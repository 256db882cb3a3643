"""What every integration relies on: lazy framework imports and gradients measured inside step(closure)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

import trainmedic as tm


def test_importing_trainmedic_and_integrations_loads_no_framework() -> None:
    code = (
        "import sys, trainmedic, trainmedic.integrations; "
        "print(','.join(m for m in ('lightning', 'keras', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_missing_extra_error_is_an_import_error_naming_the_extra() -> None:
    from trainmedic.integrations import MissingExtraError, missing_extra

    err = missing_extra("keras", "keras", "3.5", ImportError("No module named 'keras'"))
    assert isinstance(err, ImportError) and isinstance(err, tm.TrainmedicError)
    assert isinstance(err, MissingExtraError) and 'pip install "trainmedic[keras]"' in str(err)


def test_gradients_of_a_closure_step_are_the_steps_own(tmp_path: Path) -> None:
    """LBFGS (like Lightning) runs backward inside step(closure): the recorder must measure after it."""
    torch.manual_seed(0)
    X = torch.randn(64, 4)
    Y = X @ torch.randn(4, 1)
    model = nn.Linear(4, 1)
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=4)
    run = tm.watch(model, opt, run_dir=tmp_path / "run", quiet=True, every=1)
    expected = []
    for _ in range(3):
        norms: list[float] = []

        def closure(norms: list[float] = norms) -> torch.Tensor:
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(X), Y)
            loss.backward()
            norms.append(
                float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])))
            )
            return loss

        opt.step(closure)  # positional closure
        expected.append(norms[0])  # the first evaluation: the gradient at the step's starting point
        with torch.no_grad():
            run.log(loss=nn.functional.mse_loss(model(X), Y))
    sgd = torch.optim.SGD(model.parameters(), lr=0.01)  # keyword closure, second run
    run.close()
    with tm.open_run(tmp_path / "run") as r:
        gn = r.scalar("grad_norm")
        assert gn.steps.tolist() == [0, 1, 2]
        np.testing.assert_allclose(gn.values, expected, rtol=1e-5)
    run2 = tm.watch(model, sgd, run_dir=tmp_path / "run2", quiet=True)

    def closure2() -> torch.Tensor:
        sgd.zero_grad()
        loss = nn.functional.mse_loss(model(X), Y)
        loss.backward()
        return loss

    sgd.step(closure=closure2)
    g = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])))
    run2.close()
    with tm.open_run(tmp_path / "run2") as r:
        np.testing.assert_allclose(r.scalar("grad_norm").values, [g], rtol=1e-5)


def test_parity_plain_loop_gets_the_verdicts_the_callbacks_must_match(tmp_path: Path) -> None:
    """The reference for the callbacks' parity tests: a plain loop with run.log(loss=, outputs=, targets=)."""
    import parity

    found = {}
    for name, case in parity.cases().items():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, case.width), nn.ReLU(), nn.Linear(case.width, case.classes))
        opt = torch.optim.Adam(model.parameters(), lr=case.lr)
        X, y = torch.from_numpy(case.X_train), torch.from_numpy(case.y_train)
        Xv, yv = torch.from_numpy(case.X_val), torch.from_numpy(case.y_val)
        g = torch.Generator().manual_seed(0)
        with tm.watch(model, opt, run_dir=tmp_path / name, quiet=True) as run:
            for _ in range(case.epochs):
                perm = torch.randperm(len(X), generator=g)
                for i in range(0, len(X), case.batch_size):
                    b = perm[i : i + case.batch_size]
                    opt.zero_grad()
                    out = model(X[b])
                    loss = nn.functional.cross_entropy(out, y[b])
                    loss.backward()
                    opt.step()
                    run.log(loss=loss, outputs=out, targets=y[b])
                with torch.no_grad():
                    out_v = model(Xv)
                    run.evaluate("val", yv, out_v, loss=nn.functional.cross_entropy(out_v, yv))
        found[name] = parity.problems(tmp_path / name)
    assert not parity.check(found), parity.summary(found)
