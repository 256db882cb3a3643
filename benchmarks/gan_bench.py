"""Ring-GAN scenarios over several seeds: does each check find its failure, and does the healthy GAN stay
clean? Prints per run CPU time, problem codes, last diversity; then detection rate and false alarms.

Usage: python benchmarks/gan_bench.py [--seeds N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

EXPECTED = {
    "gan_healthy": set(),
    "gan_d_overpowering": {"discriminator_overpowering"},
    "gan_mode_collapse": {"mode_collapse"},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    import trainmedic as tm
    from trainmedic.findings import Severity
    from trainmedic.scenarios.gan import GAN_SCENARIOS, run_gan

    found = expected = alarms = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg in GAN_SCENARIOS.items():
            for seed in range(args.seeds):
                d_, c = os.path.join(tmp, f"{name}{seed}"), time.process_time()
                d = run_gan({**cfg, "seed": seed}, d_)
                cpu = time.process_time() - c
                codes = {f.code for f in d.findings if f.severity in (Severity.WARNING, Severity.ERROR)}
                div = tm.open_run(d_).scalar("diversity").values[-5:].mean()
                hit = EXPECTED[name] & codes
                found += len(hit)
                expected += len(EXPECTED[name])
                alarms += name == "gan_healthy" and bool(codes)
                print(
                    f"{name:20s} seed {seed}  {cpu:4.1f}s cpu  diversity(end) {div:5.2f}  problems {sorted(codes) or '-'}"
                )
    print(f"\ndetection: {found}/{expected}  healthy runs with a problem: {alarms}/{args.seeds}")


if __name__ == "__main__":
    main()
