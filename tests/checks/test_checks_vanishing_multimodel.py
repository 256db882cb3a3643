"""With several models (a GAN) the vanishing-gradient check compares layers within one model, never across."""

from __future__ import annotations

import numpy as np

import trainmedic as tm
from trainmedic.store import RunWriter


def _layer(name: str) -> dict:
    return {
        "name": name,
        "type": "Linear",
        "params": 10,
        "trainable": 10,
        "init": {"std": 0.1},
        "norm": False,
    }


def _run(tmp_path, g_first: float, g_last: float, d_first: float, d_last: float):
    w = RunWriter(tmp_path / "gan")
    layers = ["G/0", "G/2", "D/0", "D/2"]
    w.set_meta(
        models=[
            {"name": "G", "layers": [_layer("G/0"), _layer("G/2")], "trainable_params": 20},
            {"name": "D", "layers": [_layer("D/0"), _layer("D/2")], "trainable_params": 20},
        ],
        layers=layers,
    )
    w.set_layer_set("grad_norm", layers)
    for step in range(0, 300, 10):
        w.add_layer_values("grad_norm", step, np.array([g_first, g_last, d_first, d_last]))
    w.close()
    return tm.diagnose(tmp_path / "gan")


def test_small_generator_gradients_next_to_a_large_discriminator_are_not_vanishing(tmp_path) -> None:
    # G's first/last = 0.5, D's = 1: healthy inside each model; G/0 vs D/2 would be 1e-4 across models.
    d = _run(tmp_path, 1e-4, 2e-4, 0.5, 1.0)
    assert not d.has("vanishing_gradient")


def test_vanishing_inside_one_model_of_a_gan_is_found(tmp_path) -> None:
    d = _run(tmp_path, 1e-7, 1.0, 0.5, 1.0)
    (f,) = d.by_code("vanishing_gradient")
    assert f.layer == "G/0" and f.evidence["last_layer"] == "G/2"
