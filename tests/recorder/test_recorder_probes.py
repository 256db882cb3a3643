"""Every probe against a naive plain-torch computation on real small models (MLP, CNN, LSTM, Transformer)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from _recorder_helpers import LSTMNet, Reference, TransformerNet, close, cnn, digits, mlp, train, watched
from torch import nn

import trainmedic as tm
from trainmedic.probes.activations import ACT_STATS
from trainmedic.probes.layers import activation_kind

MODELS = {"mlp": mlp, "cnn": cnn, "lstm": LSTMNet, "transformer": TransformerNet}


def naive_act_stats(out: torch.Tensor, kind: str, unit_dim: int) -> list[float]:
    rows = max(1, min(64, 16384 // out[0].numel()))  # the documented sample: <= 64 rows, <= 16384 elements
    x = out.detach()[:rows].double()
    mean, std = float(x.mean()), float(x.std(unbiased=False))
    nan = float("nan")
    if kind == "relu":
        d = unit_dim if unit_dim >= 0 else x.dim() - 1
        units = x.movedim(d, -1).reshape(-1, x.shape[d])
        dead = 1.0 - float((units > 0).any(dim=0).double().mean())
        zero = float((x <= 0).double().mean())
    else:
        dead, zero = nan, float((x == 0).double().mean())
    if kind == "sigmoid":
        sat = float(((x < 0.01) | (x > 0.99)).double().mean())
    elif kind in ("tanh", "recurrent"):
        sat = float((x.abs() > 0.99).double().mean())
    else:
        sat = nan
    return [mean, std, dead, zero, sat]


class ActivationReference:
    """Naive forward hooks on the activation modules: stats of the first training forward of each step."""

    def __init__(self, model: nn.Module, unit_dims: dict[str, int]) -> None:
        self.by_step: dict[int, dict[str, list[float]]] = {}
        self.step = 0
        for path, mod in model.named_modules():
            kind = activation_kind(mod)
            if kind is not None:
                mod.register_forward_hook(self._hook(path, kind, unit_dims[path]))

    def _hook(self, name: str, kind: str, unit_dim: int) -> Any:
        def hook(mod: nn.Module, inp: Any, out: Any) -> None:
            if not torch.is_grad_enabled():
                return
            o = out[0] if isinstance(out, tuple) else out
            self.by_step.setdefault(self.step, {}).setdefault(name, naive_act_stats(o, kind, unit_dim))

        return hook


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("every", [1, 3])
def test_probes_match_naive_torch(name: str, every: int, tmp_path: Any) -> None:
    torch.manual_seed(0)
    X, y = digits(384)
    model = MODELS[name]()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    run = watched(model, opt, tmp_path, every=every)
    assert run._index is not None
    unit_dims = dict(zip(run._index.activations, run._index.activation_unit_dim))
    ref = Reference(run, model, opt)
    acts = ActivationReference(model, unit_dims)
    losses = train(model, opt, X, y, epochs=1, run=run, before_step=lambda s: setattr(acts, "step", s))
    run.close()
    r = tm.open_run(tmp_path)

    assert_matches_references(r, losses, ref, acts, every, label=name)


def assert_matches_references(
    r: Any, losses: list[float], ref: Reference, acts: ActivationReference, every: int, label: str
) -> None:
    """Every recorded probe of a run read back (``r``) equals the plain-torch references taken beside it."""
    n = len(losses)
    loss = r.scalar("loss")
    assert list(loss.steps) == list(range(n))
    assert close(loss.values, losses)
    gn = r.scalar("grad_norm")
    assert list(gn.steps) == list(range(n))
    assert close(gn.values, ref.global_grad, rtol=1e-4)

    captured = list(range(0, n, every))
    for stat, series in (("grad_norm", ref.grad), ("weight_norm", ref.weight), ("update_norm", ref.update)):
        ls = r.layer_stat(stat)
        assert list(ls.steps) == captured, stat
        assert sorted(ls.layers) == sorted(ref.layers), stat
        want = np.array([[series[s][lay] for lay in ls.layers] for s in captured])
        assert close(ls.values, want, rtol=2e-4, atol=1e-6), (stat, ls.values, want)
    ratio = r.layer_stat("update_ratio")
    want = np.array([[ref.update[s][lay] / ref.weight[s][lay] for lay in ratio.layers] for s in captured])
    assert close(ratio.values, want, rtol=5e-4, atol=1e-7)

    names = r.layer_stats.get("act_mean")
    assert names, "every model here has activation modules"
    for si, stat in enumerate(ACT_STATS):
        ls = r.layer_stat(stat)
        assert list(ls.steps) == captured, stat
        want = np.array([[acts.by_step[s][a][si] for a in names] for s in captured])
        np.testing.assert_allclose(ls.values, want, rtol=1e-4, atol=1e-5, err_msg=f"{label} {stat}")


def test_model_summary_batch_size_and_dataset_facts(tmp_path: Any) -> None:
    """Once-per-run facts: layer types, shapes, param counts, activations, dropout, norms, init scale."""
    torch.manual_seed(0)
    X, y = digits(256)
    model = nn.Sequential(
        nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.25), nn.Linear(32, 10)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.8, 0.95))
    init_std = float(model[0].weight.detach().std())
    run = watched(model, opt, tmp_path)
    train(model, opt, X, y, epochs=2, bs=32, run=run)
    with torch.no_grad():
        run.evaluate("val", y[:100], model(X[:100]))
    run.close()
    r = tm.open_run(tmp_path)
    m = r.meta["models"][0]
    assert m["total_params"] == sum(p.numel() for p in model.parameters())
    assert [lay["type"] for lay in m["layers"]] == ["Linear", "BatchNorm1d", "Linear"]
    assert m["layers"][0]["activation"] == "ReLU" and m["dropout"] == [{"layer": "3", "p": 0.25}]
    assert m["normalization"] == ["1"]
    init = m["layers"][0]["init"]
    assert init["shape"] == [32, 64] and init["fan_in"] == 64
    assert init["he_std"] == pytest.approx((2 / 64) ** 0.5)
    assert init["std"] == pytest.approx(init_std, rel=1e-5)
    assert r.meta["batch_size"] == 32 and r.meta["input_shape/model"] == [32, 64]
    opt_meta = r.meta["optimizers"][0]
    assert opt_meta["type"] == "Adam" and opt_meta["param_groups"][0]["betas"] == [0.8, 0.95]
    assert r.meta["split/train"] == {
        "samples": 256,
        "class_counts": np.bincount(y.numpy(), minlength=10).tolist(),
    }
    assert r.meta["split/val"]["class_counts"] == np.bincount(y[:100].numpy(), minlength=10).tolist()
    assert r.scalar("beta1").values[0] == 0.8 and r.scalar("beta2").values[0] == 0.95


def test_confusion_matrix_matches_sklearn(tmp_path: Any) -> None:
    from sklearn.metrics import confusion_matrix

    torch.manual_seed(1)
    X, y = digits(256)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = watched(model, opt, tmp_path)
    train(model, opt, X, y, epochs=2, run=run)
    with torch.no_grad():
        logits = model(X)
    run.evaluate("val", y, logits)
    run.close()
    r = tm.open_run(tmp_path)
    want = confusion_matrix(y.numpy(), logits.argmax(1).numpy(), labels=list(range(10)))
    np.testing.assert_array_equal(r.confusion_matrix("val"), want)
    acc = r.eval_series("val", "accuracy")
    assert acc.values[-1] == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    assert list(r.eval_series("train", "loss").steps) == [0, 1]
