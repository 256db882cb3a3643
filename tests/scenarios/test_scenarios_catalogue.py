"""Every catalogue scenario, trained for real: faulty runs report their expected problems and nothing
unrelated; healthy runs (MLP, CNN, LSTM, Transformer) report no warning or error."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from trainmedic.checks.verdict import EXPLAINS, SYMPTOMS
from trainmedic.codes import PROBLEMS
from trainmedic.findings import Finding
from trainmedic.scenarios import SCENARIOS, run_scenario


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models: one thread avoids oversubscribing CI's 2 cores under pytest -n 2."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_diagnosis(name: str, tmp_path: Path) -> None:
    sc = SCENARIOS[name]
    d = run_scenario(name, tmp_path / name)
    got = d.codes
    internal = [f.message for f in d.by_code("internal_error")]
    assert not internal, f"{name}: recorder or check failed: {internal}"
    assert sc.expected <= got, (
        f"{name}: expected {sorted(sc.expected)}, missing {sorted(sc.expected - got)}; got {sorted(got)}"
    )
    unrelated = got - sc.expected - sc.acceptable
    assert not unrelated, f"{name}: unrelated findings {sorted(unrelated)}: " + "; ".join(
        str(f) for f in d.problems if f.code in unrelated
    )
    if sc.healthy:
        assert d.healthy and d.worst().value == "info"
    for f in d.problems:
        assert f.message and f.remedies, f"{name}: {f.code} has no message or remedies"
        if f.code != "nonfinite":
            assert "thresholds" in f.evidence, f"{name}: {f.code} does not report its thresholds"
        assert 0.0 < f.confidence <= 1.0
        assert_names_its_symptom(f)


def assert_names_its_symptom(f: Finding) -> None:
    """A warning/error names the symptom it is about; a cause names the symptom it explains."""
    if f.source == "audit" or f.code == "internal_error":
        return
    if f.code in SYMPTOMS:
        assert f.message.startswith(SYMPTOMS[f.code]), f"{f.code} does not name its symptom: {f.message}"
        assert f.evidence.get("symptom") == SYMPTOMS[f.code]
    else:
        assert f.code in EXPLAINS, f"{f.code} is neither a symptom nor a cause"
        assert f.message.startswith("explains ") and f.evidence.get("explains"), (
            f"cause {f.code} does not name the symptom it explains: {f.message}"
        )


def test_catalogue_covers_every_training_code_and_architecture() -> None:
    audit_side = {
        "internal_error",
        "training_failed",
        # cross-rank checks: provoked by real 2-process gloo runs in tests/recorder/test_recorder_dist_ranks.py
        "rank_nonfinite",
        "rank_divergence",
        "rank_desync",
        "uneven_rank_data",
        "mode_collapse",
        "discriminator_overpowering",
        "label_noise",
        "data_leakage",
        "low_data_quality",
    }
    provoked = set().union(*(s.expected for s in SCENARIOS.values()))
    assert provoked == set(PROBLEMS) - audit_side
    healthy_archs = {s.arch for s in SCENARIOS.values() if s.healthy}
    assert healthy_archs == {"mlp", "cnn", "lstm", "transformer"}
    faulty_archs = {s.arch for s in SCENARIOS.values() if not s.healthy}
    assert faulty_archs == {"mlp", "cnn", "lstm", "transformer"}
    for s in SCENARIOS.values():
        assert not (s.expected & s.acceptable)
