"""Streaming metrics equal the one-shot functions, batch by batch and across two gloo processes."""

from __future__ import annotations

import gc
import json
import os
import socket
from pathlib import Path

import pytest
import torch

from trainmedic.errors import TrainmedicError
from trainmedic.metrics import (
    ClassificationMetric,
    ConfusionMatrixMetric,
    DetectionMetric,
    classification_metrics,
    match_detections,
)


def _classification_data(seed: int = 0, n: int = 403, c: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, c, (n,), generator=g), torch.randn(n, c, generator=g)


def _detection_data(seed: int = 0, images: int = 10) -> tuple[list[dict], list[dict]]:
    g = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    for i in range(images):
        k, m = 3 + i % 5, 2 + i % 3
        xy, gxy = torch.rand(k, 2, generator=g) * 30, torch.rand(m, 2, generator=g) * 30
        preds.append(
            {
                "boxes": torch.cat([xy, xy + 12], 1),
                "scores": torch.rand(k, generator=g),
                "labels": torch.randint(0, 3, (k,), generator=g),
            }
        )
        targets.append(
            {"boxes": torch.cat([gxy, gxy + 12], 1), "labels": torch.randint(0, 3, (m,), generator=g)}
        )
    return preds, targets


def test_streaming_classification_equals_one_shot() -> None:
    t, logits = _classification_data()
    metric = ClassificationMetric(num_classes=5)
    for start in range(0, len(t), 37):
        metric.update(t[start : start + 37], logits[start : start + 37])
    assert metric.compute().to_dict() == classification_metrics(t, logits, num_classes=5).to_dict()
    metric.update(t[:10], logits[:10])  # compute left the local state alone
    assert int(metric.compute().confusion_matrix.sum()) == len(t) + 10
    metric.reset()
    with pytest.raises(TrainmedicError, match="no updates"):
        metric.compute()


def test_streaming_confusion_matrix_with_binary_scores() -> None:
    g = torch.Generator().manual_seed(2)
    t, probs = torch.randint(0, 2, (100,), generator=g), torch.rand(100, generator=g)
    metric = ConfusionMatrixMetric(num_classes=2, threshold=0.4)
    for chunk in range(0, 100, 30):
        metric.update(t[chunk : chunk + 30], probs[chunk : chunk + 30])
    assert torch.equal(metric.compute(), classification_metrics(t, probs, threshold=0.4).confusion_matrix)


def test_streaming_rejects_labels_beyond_num_classes() -> None:
    metric = ClassificationMetric(num_classes=3)
    with pytest.raises(TrainmedicError, match=r"`targets` must be class indices in \[0, 3\)"):
        metric.update(torch.tensor([0, 3]), torch.tensor([0, 1]))
    with pytest.raises(TrainmedicError, match="`num_classes` must be a positive integer"):
        ClassificationMetric(num_classes=None)  # type: ignore[arg-type]


def test_streaming_detection_equals_one_shot() -> None:
    preds, targets = _detection_data()
    metric = DetectionMetric(iou_threshold=0.5)
    for start in range(0, len(preds), 3):
        metric.update(targets[start : start + 3], preds[start : start + 3])
    assert metric.compute().to_dict() == match_detections(preds, targets).to_dict()
    with pytest.raises(TrainmedicError, match="swapped"):
        metric.update(preds, targets)


# ------------------------------------------------------------------------------------------------- DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        t, logits = _classification_data()
        preds, targets = _detection_data()
        # Contiguous, unequal shards: rank 0 gets the first part, rank 1 the rest.
        cut, img_cut = 150, 4
        lo, hi = (0, cut) if rank == 0 else (cut, len(t))
        ilo, ihi = (0, img_cut) if rank == 0 else (img_cut, len(preds))
        cls_metric = ClassificationMetric(num_classes=5)
        det_metric = DetectionMetric()
        for s in range(lo, hi, 40):
            cls_metric.update(t[s : min(s + 40, hi)], logits[s : min(s + 40, hi)])
        for s in range(ilo, ihi, 2):
            det_metric.update(targets[s : min(s + 2, ihi)], preds[s : min(s + 2, ihi)])
        result = {
            "classification": cls_metric.compute().to_dict(),
            "detection": det_metric.compute().to_dict(),
        }
        local = int(cls_metric.confmat.sum())
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"result": result, "local": local}))
        del cls_metric, det_metric
    finally:
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


@pytest.mark.ddp
def test_two_process_gloo_sync_equals_single_process(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    t, logits = _classification_data()
    preds, targets = _detection_data()
    expected = {
        "classification": classification_metrics(t, logits, num_classes=5).to_dict(),
        "detection": match_detections(preds, targets).to_dict(),
    }
    for rank in (0, 1):
        got = json.loads(Path(tmp_path, f"rank{rank}.json").read_text())
        assert got["result"] == json.loads(json.dumps(expected))
        assert got["local"] == (150 if rank == 0 else len(t) - 150)  # each rank kept only its own shard
