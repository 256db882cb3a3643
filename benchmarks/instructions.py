"""Instructions a watched program adds, counted by valgrind: a measure of the recorder's cost that no neighbour
on a shared machine can disturb (wall time on a small VM moves by more than the cost itself).

For each mode (bare, watched) the same ``end_to_end.py`` loop runs in two processes under
``valgrind --tool=cachegrind``: both warm up (a bare program, and a watched one for the watched mode), then run
1 and 3 programs; the difference of their counts, halved, is one program. Counts are deterministic with
``PYTHONHASHSEED=0`` (dict and set layouts) and one BLAS thread (OpenBLAS's idle workers spin, and their
spinning is counted: ±150 M instructions between two runs of the same program otherwise).

    python benchmarks/instructions.py [--loops tabular,mlp] [--src PATH]   # ~5 min per process on 1 core

``--src`` puts another tree's ``src`` first on ``PYTHONPATH`` (an A/B against an older commit: ``git worktree
add /tmp/old REV`` then ``--src /tmp/old/src``). Needs ``valgrind`` on ``PATH``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _child(loop_name: str, mode: str, n: int) -> None:
    """One process: warm up, then ``n`` programs of ``mode``."""
    sys.path.insert(0, str(HERE))
    import end_to_end as e
    import torch

    torch.set_num_threads(1)
    loop = e.LOOPS[loop_name]
    data = loop.data()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        e.train(loop, data, False, root, False)
        if mode == "watched":
            e.train(loop, data, True, root, False)
        for _ in range(n):
            e.train(loop, data, mode == "watched", root, False)


def _count(loop: str, mode: str, n: int, src: str | None) -> int:
    env = dict(
        os.environ, PYTHONHASHSEED="0", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"
    )
    if src:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [
                "valgrind",
                "--tool=cachegrind",
                "--cache-sim=no",
                f"--cachegrind-out-file={tmp}/cg.out",
                sys.executable,
                __file__,
                "--child",
                f"{loop}:{mode}:{n}",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    m = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
    if m is None:
        raise SystemExit(f"no instruction count in valgrind's output:\n{out.stderr[-2000:]}")
    return int(m.group(1).replace(",", ""))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--loops", default="tabular,mlp")
    ap.add_argument("--src", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        loop, mode, n = a.child.split(":")
        _child(loop, mode, int(n))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed")
    for loop in [s.strip() for s in a.loops.split(",") if s.strip()]:
        per = {}
        for mode in ("bare", "watched"):
            per[mode] = (_count(loop, mode, 3, a.src) - _count(loop, mode, 1, a.src)) / 2
        extra = per["watched"] - per["bare"]
        print(
            f"{loop:<12} bare {per['bare'] / 1e6:,.1f} M, watched {per['watched'] / 1e6:,.1f} M instructions "
            f"per program: +{extra / 1e6:,.1f} M (+{100 * extra / per['bare']:.1f}%)",
            flush=True,
        )


if __name__ == "__main__":
    main()
