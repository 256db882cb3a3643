"""Throughput of trainmedic.metrics: a 1,000-class confusion matrix and detection matching at scale.

Run: ``python benchmarks/metrics_bench.py``. Prints one line per case; numbers are the best of a few runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from trainmedic.metrics import DetectionMetric, classification_metrics, confusion_matrix, match_detections


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def detection_data(images: int, boxes: int, classes: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Noisy copies of the ground truth plus background boxes, so matching has real work to do."""
    g = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    n_gt = boxes // 2
    for _ in range(images):
        xy = torch.rand(n_gt, 2, generator=g) * 600
        wh = torch.rand(n_gt, 2, generator=g) * 100 + 10
        gt = torch.cat([xy, xy + wh], 1)
        gl = torch.randint(0, classes, (n_gt,), generator=g)
        jitter = torch.randn(n_gt, 4, generator=g) * 5
        near = gt + jitter
        near = torch.cat(
            [torch.minimum(near[:, :2], near[:, 2:]), torch.maximum(near[:, :2], near[:, 2:])], 1
        )
        bxy = torch.rand(boxes - n_gt, 2, generator=g) * 600
        background = torch.cat([bxy, bxy + torch.rand(boxes - n_gt, 2, generator=g) * 100 + 10], 1)
        labels = torch.cat([gl, torch.randint(0, classes, (boxes - n_gt,), generator=g)])
        preds.append(
            {
                "boxes": torch.cat([near, background]),
                "scores": torch.rand(boxes, generator=g),
                "labels": labels,
            }
        )
        targets.append({"boxes": gt, "labels": gl})
    return preds, targets


def main() -> None:
    for threads in (1, 2):
        torch.set_num_threads(threads)
        print(f"--- torch threads: {threads}")
        run_cases()


def run_cases() -> None:
    torch.manual_seed(0)
    n, c = 1_000_000, 1_000
    t = torch.randint(0, c, (n,))
    p = torch.randint(0, c, (n,))
    secs = best_of(lambda: confusion_matrix(t, p, num_classes=c))
    print(
        f"confusion_matrix      1,000 classes x 1M class indices: {secs * 1e3:7.1f} ms  ({n / secs / 1e6:6.1f} M predictions/s)"
    )
    secs = best_of(lambda: classification_metrics(t, p, num_classes=c))
    print(
        f"classification_metrics 1,000 classes x 1M class indices: {secs * 1e3:7.1f} ms  ({n / secs / 1e6:6.1f} M predictions/s)"
    )
    n_logits = 100_000
    logits = torch.randn(n_logits, c)
    secs = best_of(lambda: confusion_matrix(t[:n_logits], logits))
    print(
        f"confusion_matrix      1,000 classes x 100k logit rows:  {secs * 1e3:7.1f} ms  ({n_logits / secs / 1e6:6.1f} M predictions/s)"
    )

    images, boxes, classes = 5_000, 100, 80
    preds, targets = detection_data(images, boxes, classes)
    secs = best_of(lambda: match_detections(preds, targets), repeat=2)
    n_gt = sum(len(x["labels"]) for x in targets)
    print(
        f"match_detections      {images:,} images x {boxes} boxes ({n_gt:,} ground truths, {classes} classes, "
        f"11 IoU thresholds): {secs:6.2f} s  ({images / secs:,.0f} images/s)"
    )
    streamed = DetectionMetric()
    secs = best_of(
        lambda: [streamed.update(targets[i : i + 64], preds[i : i + 64]) for i in range(0, images, 64)],
        repeat=1,
    )
    print(
        f"DetectionMetric.update same data in batches of 64 images: {secs:6.2f} s  ({images / secs:,.0f} images/s)"
    )
    m = match_detections(preds, targets)
    print(
        f"  (sanity: map_50={m.map_50:.3f}, map_50_95={m.map_50_95:.3f}, precision={m.precision_micro:.3f}, recall={m.recall_micro:.3f})"
    )


if __name__ == "__main__":
    main()
