"""The scenario catalogue: named training configs and the problems each must (and may) produce.

``expected``: codes the diagnosis must report (recall is measured on these). ``acceptable``: co-findings
that are honest consequences of the provoked fault and are not counted as false alarms — kept small and
listed per scenario. :data:`NO_LEARNING` names the consequences of a run that learned nothing at all
(accuracy near chance): such a model *is* underfit, inaccurate, imprecise on some class and missing
others, so saying so is not a false alarm. Healthy scenarios expect nothing and accept nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import TrainmedicError

NO_LEARNING = frozenset(
    {"underfitting", "low_accuracy", "low_precision", "low_recall", "inefficient_learning"}
)
POOR_CLASSES = frozenset({"low_accuracy", "low_precision", "low_recall"})


@dataclass(frozen=True)
class Scenario:
    name: str
    config: dict[str, Any]
    expected: frozenset[str] = field(default_factory=frozenset)
    acceptable: frozenset[str] = field(default_factory=frozenset)
    note: str = ""

    @property
    def arch(self) -> str:
        return str(self.config.get("arch", "mlp"))

    @property
    def healthy(self) -> bool:
        return not self.expected


def _s(
    name: str,
    config: dict[str, Any],
    expected: set[str] | frozenset[str] = frozenset(),
    acceptable: set[str] | frozenset[str] = frozenset(),
    note: str = "",
) -> Scenario:
    return Scenario(name, config, frozenset(expected), frozenset(acceptable) - frozenset(expected), note)


SEQ = {"dataset": "sequences", "arch": "lstm", "width": 32, "depth": 1}
TOK = {"dataset": "tokens", "arch": "transformer", "width": 32, "depth": 1}
CNN = {"arch": "cnn", "width": 16, "depth": 2}

_ALL = [
    # ---- healthy: no warning, no error --------------------------------------------------------------
    _s("healthy_mlp", {"epochs": 10}, note="Adam 1e-3 on digits: converges to ~96% val accuracy"),
    _s("healthy_cnn", {**CNN, "lr": 3e-3, "epochs": 8}),
    _s("healthy_lstm", {**SEQ, "lr": 1e-2, "epochs": 10}),
    _s("healthy_transformer", {**TOK, "lr": 3e-3, "epochs": 10}),
    # ---- overfitting / insufficient data --------------------------------------------------------------
    _s(
        "overfit_tiny_mlp",
        {"data": {"train_per_class": 10}, "width": 256, "epochs": 60, "lr": 3e-3},
        {"overfitting"},
        {"insufficient_data"},
    ),
    _s(
        "overfit_tiny_cnn",
        {**CNN, "width": 32, "data": {"train_per_class": 10}, "epochs": 60, "lr": 3e-3},
        {"overfitting", "insufficient_data"},
    ),
    _s(
        "overfit_transformer_noisy_labels",
        {
            **TOK,
            "width": 64,
            "depth": 2,
            "lr": 3e-3,
            "epochs": 25,
            "data": {"train_per_class": 15, "label_noise": 0.3},
        },
        {"overfitting"},
        {"insufficient_data"},
        note="memorizes 30% wrong labels of a small training set: val loss more than doubles, a 30-point gap "
        "(the earlier high-lr transformer's val loss only wobbled within its noise)",
    ),
    _s(
        "unstable_sgd_momentum",
        {"optimizer": "sgd", "lr": 0.3, "momentum": 0.9, "epochs": 6},
        {"inefficient_learning"},
        {"overfitting", "low_accuracy", "low_recall", "low_precision", "gradient_masking", "underfitting"},
        note="steps too large under heavy momentum: the loss reaches its best in epoch 2, then climbs back and "
        "stays up on train and val alike (val accuracy 81% -> 14%): unstable, which the diagnosis once called "
        "overfitting. (At lr 0.2 only the last epoch spiked, and on some machines not at all: one final-epoch "
        "spike is within what a healthy run shows, so the diagnosis does not judge it.)",
    ),
    _s(
        "insufficient_mlp",
        {"data": {"train_per_class": 5}, "width": 128, "epochs": 40},
        {"insufficient_data", "overfitting"},
    ),
    _s(
        "insufficient_lstm",
        {**SEQ, "width": 64, "lr": 1e-2, "epochs": 40, "data": {"train_per_class": 5}},
        {"insufficient_data", "overfitting"},
    ),
    # ---- underfitting / inefficient learning ----------------------------------------------------------
    _s(
        "underfit_sgd_tiny_lr",
        {"optimizer": "sgd", "lr": 1e-3, "epochs": 6},
        {"underfitting", "inefficient_learning", "low_accuracy"},
        NO_LEARNING,
    ),
    _s(
        "underfit_width2",
        {"width": 2, "depth": 1, "epochs": 6},
        {"underfitting", "low_accuracy"},
        NO_LEARNING,
    ),
    _s(
        "underfit_transformer_tiny_lr",
        {**TOK, "width": 16, "optimizer": "sgd", "lr": 1e-3, "epochs": 5},
        {"underfitting", "inefficient_learning", "low_accuracy"},
        NO_LEARNING,
    ),
    _s(
        "oscillating_adam_lr0.1",
        {"lr": 0.1, "epochs": 6, "activation": "leaky_relu"},
        {"inefficient_learning"},
    ),
    # ---- data: imbalance, mismatch, per-class errors --------------------------------------------------
    _s(
        "imbalance_mlp_r10",
        {"data": {"imbalance": 10}, "epochs": 8},
        {"data_imbalance", "low_recall"},
        POOR_CLASSES,
    ),
    _s(
        "imbalance_mlp_r30",
        {"data": {"imbalance": 30}, "epochs": 8},
        {"data_imbalance", "low_recall"},
        POOR_CLASSES,
    ),
    _s(
        "imbalance_lstm_r8",
        {**SEQ, "lr": 1e-2, "epochs": 8, "data": {"imbalance": 8}},
        {"data_imbalance"},
        note="minority recall stays good: no recall finding",
    ),
    _s(
        "mismatch_train_label_noise",
        {"data": {"label_noise": 0.5}, "epochs": 5, "weight_decay": 1e-3},
        {"train_test_mismatch"},
        {"low_recall"},
    ),
    _s(
        "mismatch_cnn_train_input_noise",
        {**CNN, "data": {"train_input_noise": 1.5}, "epochs": 5, "lr": 3e-3},
        {"train_test_mismatch"},
        {"low_recall"},
    ),
    _s(
        "confused_labels_1_as_7",
        {"data": {"confuse": (1, 7), "confuse_rate": 0.9}, "epochs": 8},
        {"low_recall"},
        {"data_imbalance", "overfitting", "low_precision"},
        note="relabelling 1→7 also skews the class counts; class 7's precision lands at ~48% of ~90 "
        "predictions, within half a standard error of the 50% threshold, so low_precision may or may not be "
        "reported",
    ),
    _s(
        "absorbing_class_7",
        {"data": {"confuse": [(1, 7), (4, 7)], "confuse_rate": 1.0}, "epochs": 8},
        {"low_precision", "low_recall"},
        {"data_imbalance", "low_accuracy", "overfitting"},
        note="classes 1 and 4 are labelled 7 in training: class 7 absorbs them (precision ~1/3); the held-out "
        "loss rises as the model grows sure of the wrong labels",
    ),
    # ---- initialization -------------------------------------------------------------------------------
    _s(
        "init_zeros_mlp",
        {"init": "zeros", "epochs": 4},
        {"bad_initialization"},
        NO_LEARNING | {"vanishing_gradient", "gradient_masking"},
    ),
    _s(
        "init_tiny_deep_mlp",
        {"init": "tiny", "depth": 4, "epochs": 4},
        {"bad_initialization", "vanishing_gradient"},
        NO_LEARNING | {"gradient_masking"},
    ),
    _s(
        "init_huge_tanh_mlp",
        {"init": "huge", "activation": "tanh", "epochs": 4},
        {"bad_initialization", "gradient_masking"},
        NO_LEARNING,
    ),
    _s("init_constant_cnn", {**CNN, "init": "constant", "epochs": 4}, {"bad_initialization"}, NO_LEARNING),
    _s(
        "init_huge_sigmoid_cnn",
        {**CNN, "init": "huge", "activation": "sigmoid", "epochs": 4},
        {"bad_initialization", "gradient_masking"},
        NO_LEARNING,
    ),
    # ---- activations and gradients --------------------------------------------------------------------
    _s(
        "saturated_tanh_sgd_lr3",
        {"optimizer": "sgd", "lr": 3.0, "epochs": 6, "activation": "tanh"},
        note="most units sit on the flat tails, yet it learns to ~97% val accuracy: gradient_masking is an "
        "info note (a cause without harm), not a problem",
    ),
    _s(
        "dead_relu_sgd_lr1",
        {"optimizer": "sgd", "lr": 1.0, "momentum": 0.9, "epochs": 4},
        {"exploding_gradient"},
        NO_LEARNING | {"vanishing_gradient", "gradient_masking"},
        note="an effective step of 10 grows the gradient norm 330x in 17 steps and the loss 200x (2.3 -> 465); "
        "the ReLUs die in that blow-up. Root cause first: the explosion is the finding, the dead units that "
        "follow are its evidence (gradient_masking is accepted, not required)",
    ),
    _s(
        "dead_relu_lstm_head",
        {**SEQ, "optimizer": "sgd", "lr": 5.0, "epochs": 6},
        {"gradient_masking"},
        NO_LEARNING | {"vanishing_gradient"},
    ),
    _s(
        "vanishing_sigmoid_deep_mlp",
        {"activation": "sigmoid", "depth": 8, "width": 32, "optimizer": "sgd", "lr": 0.1, "epochs": 4},
        {"vanishing_gradient"},
        NO_LEARNING,
    ),
    _s(
        "vanishing_sigmoid_deep_cnn",
        {**CNN, "activation": "sigmoid", "depth": 6, "width": 8, "optimizer": "sgd", "lr": 0.1, "epochs": 3},
        {"vanishing_gradient"},
        NO_LEARNING,
    ),
    _s(
        "exploding_sgd_lr0.3_depth4",
        {"optimizer": "sgd", "lr": 0.3, "momentum": 0.9, "epochs": 4, "activation": "leaky_relu", "depth": 4},
        {"exploding_gradient", "nonfinite"},
        POOR_CLASSES,
    ),
    _s(
        "exploding_sgd_lr0.5_depth3",
        {"optimizer": "sgd", "lr": 0.5, "momentum": 0.9, "epochs": 4, "activation": "leaky_relu", "depth": 3},
        {"exploding_gradient", "nonfinite"},
        POOR_CLASSES,
    ),
    _s(
        "nonfinite_raw_inputs",
        {"normalize_inputs": False, "optimizer": "sgd", "lr": 0.5, "epochs": 3},
        {"nonfinite"},
        {"gradient_masking", "exploding_gradient"},
    ),
    _s(
        "nonfinite_transformer_sgd_lr1",
        {
            **TOK,
            "depth": 2,
            "optimizer": "sgd",
            "lr": 1.0,
            "momentum": 0.9,
            "epochs": 5,
            "activation": "leaky_relu",
        },
        {"nonfinite"},
        POOR_CLASSES | {"exploding_gradient"},
    ),
]

SCENARIOS: dict[str, Scenario] = {s.name: s for s in _ALL}


def run_scenario(
    name_or_config: str | Mapping[str, Any],
    run_dir: str | os.PathLike[str],
    thresholds: Mapping[str, Any] | None = None,
) -> Any:
    """Train a catalogue scenario (or any config for :func:`~trainmedic.scenarios.train.train_fn`) into
    ``run_dir`` (overwritten) and return its :class:`~trainmedic.findings.Diagnosis`."""
    from ..checks import diagnose
    from ..watch import watch
    from .train import train_fn

    if isinstance(name_or_config, str):
        if name_or_config not in SCENARIOS:
            raise TrainmedicError(
                f"`name_or_config` must be a scenario name ({', '.join(SCENARIOS)}) or a config dict; got {name_or_config!r}"
            )
        config: Mapping[str, Any] = SCENARIOS[name_or_config].config
        name = name_or_config
    else:
        config, name = name_or_config, None
    run = watch(run_dir=run_dir, overwrite=True, quiet=True, name=name, config=dict(config))
    try:
        train_fn(config, run)
    finally:
        run.close()
    return diagnose(run_dir, thresholds=thresholds)
