"""docs/integrations.md: every complete example (a ```python block after ``<!-- example: NAME -->``) runs as
written, in a fresh process and an empty directory, records a closed run and prints its diagnosis."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import trainmedic as tm

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"
EXAMPLE = re.compile(r"<!-- example: ([\w-]+) -->\s*```python\n(.*?)```", re.S)
NEEDS = {
    "lightning": ("lightning",),
    "keras-tensorflow": ("keras", "tensorflow"),
    "keras-torch": ("keras",),
    "hf": ("transformers", "accelerate"),
}


def examples() -> dict[str, str]:
    return dict(EXAMPLE.findall(DOC.read_text()))


def test_the_page_has_a_complete_example_per_framework_and_the_signal_table() -> None:
    text = DOC.read_text()
    assert set(examples()) == set(NEEDS)
    header = next(line for line in text.splitlines() if line.startswith("| signal |"))
    for column in ("plain loop", "Lightning", "Keras · torch", "Keras · TensorFlow", "Keras · JAX", "HF"):
        assert column in header


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NEEDS))
def test_example_runs_as_written(name: str, tmp_path: Path) -> None:
    missing = [m for m in NEEDS[name] if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")
    code = examples()[name]
    script = tmp_path / f"example_{name.replace('-', '_')}.py"  # never named like a package
    script.write_text(code)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("KERAS_BACKEND", None)  # each Keras example chooses its own
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / re.search(r'TrainmedicCallback\("([^"]+)"', code).group(1)  # type: ignore[union-attr]
    with tm.open_run(run_dir) as r:
        assert r.meta["status"] == "closed"
        assert len(r.scalar("loss")) > 0 and "train_running" in r.splits and "val" in r.splits
        assert r.confusion_matrix("val") is not None
        assert r.meta.get("batch_size") in (32, 64)
    summary = proc.stdout.strip().splitlines()[-1]
    d = tm.diagnose(run_dir)
    assert summary == d.summary
    # each example is a program that trains well: the first thing a user runs must not warn
    assert not [f for f in d.findings if f.is_problem], [f"{f.code}: {f.message}" for f in d.findings]
