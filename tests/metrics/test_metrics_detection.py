"""Detection matching and COCO-style AP: hand-computed scenes and an independent naive reference.

torchmetrics' ``MeanAveragePrecision`` needs pycocotools or faster_coco_eval, neither of which is installed
here, so the reference is written out below: plain Python loops for matching (pycocotools' rule) and, for AP,
the textbook definition of interpolated precision (the best precision at any recall >= r) instead of the
implementation's "monotone envelope + searchsorted".
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainmedic.errors import TrainmedicError
from trainmedic.metrics import COCO_IOU_THRESHOLDS, match_detections

RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def _iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reference(preds: list[dict], targets: list[dict], thresholds: list[float], num_classes: int) -> dict:
    """Per class and threshold: (tp flags in COCO accumulation order, number of ground truths) → AP, counts."""
    flags: dict[tuple[int, int], list[tuple[float, bool]]] = {}
    n_gt = [0] * num_classes
    for pred, tgt in zip(preds, targets):
        boxes, scores, labels = pred["boxes"].tolist(), pred["scores"].tolist(), pred["labels"].tolist()
        gboxes, glabels = tgt["boxes"].tolist(), tgt["labels"].tolist()
        for lab in glabels:
            n_gt[lab] += 1
        order = sorted(range(len(scores)), key=lambda k: -scores[k])  # stable
        for c in range(num_classes):
            dets = [k for k in order if labels[k] == c]
            gts = [j for j in range(len(glabels)) if glabels[j] == c]
            for ti, t in enumerate(thresholds):
                used = set()
                for k in dets:
                    best, best_j = min(t, 1 - 1e-10), -1
                    for j in gts:
                        if j in used:
                            continue
                        iou = _iou(boxes[k], gboxes[j])
                        if iou >= best:
                            best, best_j = iou, j
                    if best_j >= 0:
                        used.add(best_j)
                    flags.setdefault((c, ti), []).append((scores[k], best_j >= 0))
    ap = np.zeros((num_classes, len(thresholds)))
    tp = np.zeros((num_classes, len(thresholds)), dtype=int)
    for (c, ti), items in flags.items():
        items = sorted(items, key=lambda x: -x[0])  # stable: image order for ties
        tp[c, ti] = sum(m for _, m in items)
        if n_gt[c] == 0:
            continue
        hits = np.cumsum([m for _, m in items])
        ranks = np.arange(1, len(items) + 1)
        precision, recall = hits / ranks, hits / n_gt[c]
        ap[c, ti] = np.mean(
            [max((p for p, r in zip(precision, recall) if r >= rp), default=0.0) for rp in RECALL_POINTS]
        )
    has_gt = np.array(n_gt) > 0
    return {
        "ap": ap,
        "tp": tp,
        "n_gt": np.array(n_gt),
        "map": ap[has_gt].mean(axis=0) if has_gt.any() else 0 * ap[0],
    }


def _img(boxes, scores=None, labels=None):
    d = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels or [0] * len(boxes), dtype=torch.long),
    }
    if scores is not None:
        d["scores"] = torch.tensor(scores, dtype=torch.float32)
    return d


def test_iou_exactly_half_is_a_match() -> None:
    m = match_detections([_img([[0, 0, 10, 5]], [0.9])], [_img([[0, 0, 10, 10]])])
    assert (m.tp.tolist(), m.fp.tolist(), m.fn.tolist()) == ([1], [0], [0])
    assert m.map_50 == 1.0
    assert m.map_50_95 == pytest.approx(0.1)  # matches only at 0.50 of the ten thresholds
    strict = match_detections([_img([[0, 0, 10, 5]], [0.9])], [_img([[0, 0, 10, 10]])], iou_threshold=0.55)
    assert strict.tp.tolist() == [0] and strict.fp.tolist() == [1] and strict.fn.tolist() == [1]


def test_duplicate_detection_is_a_false_positive() -> None:
    m = match_detections([_img([[0, 0, 10, 10], [1, 1, 10, 10]], [0.9, 0.8])], [_img([[0, 0, 10, 10]])])
    assert (m.tp.tolist(), m.fp.tolist(), m.fn.tolist()) == ([1], [1], [0])
    assert m.precision.tolist() == [0.5] and m.recall.tolist() == [1.0]
    assert m.map_50 == 1.0  # the duplicate ranks below the match: precision at recall 1 is still 1


def test_wrong_class_never_matches() -> None:
    m = match_detections([_img([[0, 0, 10, 10]], [0.9], [1])], [_img([[0, 0, 10, 10]], labels=[0])])
    assert m.tp.tolist() == [0, 0] and m.fp.tolist() == [0, 1] and m.fn.tolist() == [1, 0]
    assert m.classes_without_targets == [1]  # no AP defined: left out of the mAP, like COCO
    assert m.map_50 == 0.0
    assert m.classes_without_predictions == [0]


def test_crowded_scene_greedy_by_score_and_last_best_on_ties() -> None:
    gts = _img([[0, 0, 10, 10], [4, 0, 14, 10]])
    # The top detection overlaps both ground truths with IoU 2/3 each: pycocotools keeps the last one (B),
    # so the second detection (IoU 1 with B, 0.43 with A) finds nothing left.
    preds = _img([[2, 0, 12, 10], [4, 0, 14, 10]], [0.9, 0.8])
    m = match_detections([preds], [gts])
    assert (m.tp.tolist(), m.fp.tolist(), m.fn.tolist()) == ([1], [1], [1])
    ref = reference([preds], [gts], list(COCO_IOU_THRESHOLDS), 1)
    assert m.map_50 == pytest.approx(ref["map"][0])
    # Score order decides, not input order.
    swapped = _img([[4, 0, 14, 10], [2, 0, 12, 10]], [0.8, 0.9])
    assert match_detections([swapped], [gts]).tp.tolist() == [1]


def test_crowded_scene_best_iou_wins() -> None:
    gts = _img([[0, 0, 10, 10], [5, 0, 15, 10]])
    preds = _img([[4, 0, 14, 10], [0, 0, 10, 10]], [0.9, 0.8])  # first → B (IoU 0.82), second → A (IoU 1)
    m = match_detections([preds], [gts])
    assert (m.tp.tolist(), m.fp.tolist(), m.fn.tolist()) == ([2], [0], [0])


def test_hand_computed_ap() -> None:
    gts = _img([[0, 0, 10, 10], [20, 20, 30, 30]])
    preds = _img([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], [0.9, 0.8, 0.7])
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 → 51 points at 1, 50 at 2/3.
    m = match_detections([preds], [gts])
    assert m.ap_50.tolist() == pytest.approx([(51 + 50 * 2 / 3) / 101])


def test_images_without_predictions_or_targets() -> None:
    preds = [_img([], []), _img([[0, 0, 5, 5]], [0.5])]
    targets = [_img([[0, 0, 5, 5]]), _img([])]
    m = match_detections(preds, targets)
    assert (m.tp.tolist(), m.fp.tolist(), m.fn.tolist()) == ([0], [1], [1])
    assert m.map_50 == 0.0 and m.num_images == 2
    nothing = match_detections([_img([], [])], [_img([])])
    assert nothing.num_classes == 0 and nothing.map_50 == 0.0 and nothing.scalars()["precision"] == 0.0


def test_to_dict_is_plain_json() -> None:
    d = match_detections(
        [_img([[0, 0, 10, 10]], [0.9], [2])], [_img([[0, 0, 10, 10]], labels=[2])], num_classes=4
    ).to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert {"map_50", "map_50_95", "precision", "recall"} <= set(d["scalars"])
    assert len(d["per_class"]["ap_50"]) == 4 and d["classes_without_targets"] == [0, 1, 3]


@st.composite
def _scene(draw):
    num_classes = draw(st.integers(1, 3))
    coord = st.integers(0, 12)
    box = st.tuples(coord, coord, st.integers(1, 8), st.integers(1, 8)).map(
        lambda r: [r[0], r[1], r[0] + r[2], r[1] + r[3]]
    )
    preds, targets = [], []
    for _ in range(draw(st.integers(1, 4))):
        k = draw(st.integers(0, 7))
        g = draw(st.integers(0, 6))
        preds.append(
            _img(
                draw(st.lists(box, min_size=k, max_size=k)),
                draw(
                    st.lists(st.sampled_from([0.2, 0.4, 0.5, 0.7, 0.9]), min_size=k, max_size=k)
                ),  # ties on purpose
                draw(st.lists(st.integers(0, num_classes - 1), min_size=k, max_size=k)),
            )
        )
        targets.append(
            _img(
                draw(st.lists(box, min_size=g, max_size=g)),
                labels=draw(st.lists(st.integers(0, num_classes - 1), min_size=g, max_size=g)),
            )
        )
    return num_classes, preds, targets


@settings(max_examples=60, deadline=None)
@given(_scene())
def test_matches_naive_reference(scene) -> None:
    num_classes, preds, targets = scene
    m = match_detections(preds, targets, num_classes=num_classes)
    ref = reference(preds, targets, list(COCO_IOU_THRESHOLDS), num_classes)
    np.testing.assert_allclose(m.ap_50.numpy(), ref["ap"][:, 0], atol=1e-12)
    np.testing.assert_allclose(m.ap_50_95.numpy(), ref["ap"].mean(axis=1), atol=1e-12)
    assert m.tp.tolist() == ref["tp"][:, 0].tolist()
    assert m.support.tolist() == ref["n_gt"].tolist()
    assert m.map_50 == pytest.approx(float(ref["map"][0]), abs=1e-12)
    assert m.map_50_95 == pytest.approx(float(np.mean(ref["map"])), abs=1e-12)


def test_large_random_scene_matches_reference_across_chunks(monkeypatch) -> None:
    import trainmedic.metrics.detection as det

    monkeypatch.setattr(det, "_PAIR_BUDGET", 7)  # force many chunks
    g = torch.Generator().manual_seed(3)
    preds, targets = [], []
    for _ in range(12):
        xy = torch.rand(15, 2, generator=g) * 40
        wh = torch.rand(15, 2, generator=g) * 20 + 1
        gxy = torch.rand(8, 2, generator=g) * 40
        gwh = torch.rand(8, 2, generator=g) * 20 + 1
        preds.append(
            {
                "boxes": torch.cat([xy, xy + wh], 1),
                "scores": torch.rand(15, generator=g),
                "labels": torch.randint(0, 3, (15,), generator=g),
            }
        )
        targets.append(
            {"boxes": torch.cat([gxy, gxy + gwh], 1), "labels": torch.randint(0, 3, (8,), generator=g)}
        )
    m = match_detections(preds, targets, num_classes=3, iou_threshold=0.3)
    ref = reference(preds, targets, [*COCO_IOU_THRESHOLDS, 0.3], 3)
    np.testing.assert_allclose(m.ap_50_95.numpy(), ref["ap"][:, :10].mean(axis=1), atol=1e-12)
    np.testing.assert_allclose(m.ap.numpy(), ref["ap"][:, 10], atol=1e-12)
    assert m.tp.tolist() == ref["tp"][:, 10].tolist()


def test_matches_pycocotools_cocoeval() -> None:
    """The reference implementation of COCO mAP (torchmetrics' own mAP needs torchvision, absent here)."""
    pytest.importorskip("pycocotools")
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    g = torch.Generator().manual_seed(5)
    preds, targets = [], []
    for _ in range(6):
        xy, gxy = torch.rand(10, 2, generator=g) * 50, torch.rand(6, 2, generator=g) * 50
        preds.append(
            {
                "boxes": torch.cat([xy, xy + 15], 1),
                "scores": torch.rand(10, generator=g),
                "labels": torch.randint(0, 2, (10,), generator=g),
            }
        )
        targets.append(
            {"boxes": torch.cat([gxy, gxy + 15], 1), "labels": torch.randint(0, 2, (6,), generator=g)}
        )

    def xywh(b: torch.Tensor) -> list[float]:
        return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]

    images = [{"id": i, "width": 100, "height": 100} for i in range(len(targets))]
    anns, dets = [], []
    for i, (t, p) in enumerate(zip(targets, preds)):
        for b, lab in zip(t["boxes"], t["labels"]):
            w = xywh(b)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": int(lab),
                    "bbox": w,
                    "area": w[2] * w[3],
                    "iscrowd": 0,
                }
            )
        for b, s, lab in zip(p["boxes"], p["scores"], p["labels"]):
            dets.append({"image_id": i, "category_id": int(lab), "bbox": xywh(b), "score": float(s)})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 0}, {"id": 1}]}
        gt.createIndex()
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    m = match_detections(preds, targets)
    assert m.map_50_95 == pytest.approx(float(ev.stats[0]), abs=1e-6)
    assert m.map_50 == pytest.approx(float(ev.stats[1]), abs=1e-6)


@pytest.mark.parametrize(
    ("preds", "targets", "kwargs", "message"),
    [
        (
            [{"boxes": torch.zeros(1, 4), "labels": torch.zeros(1)}],
            [_img([])],
            {},
            "`preds[0]` must be a dict with keys 'boxes', 'scores', 'labels'",
        ),
        ([_img([[5, 0, 1, 1]], [0.5])], [_img([])], {}, "x2 >= x1"),
        (
            [_img([[0, 0, 1, 1]], [0.5], [3])],
            [_img([])],
            {"num_classes": 3},
            "`preds[0]['labels']` must be class indices [0, 3); got 3",
        ),
        ([_img([[0, 0, 1, 1]], [float("nan")])], [_img([])], {}, "must not contain NaN"),
        ([], [], {}, "at least one image"),
        ([_img([], [])], [_img([]), _img([])], {}, "one dict per image"),
        (
            [
                {
                    "boxes": torch.zeros(2, 4),
                    "scores": torch.zeros(3),
                    "labels": torch.zeros(2, dtype=torch.long),
                }
            ],
            [_img([])],
            {},
            "`preds[0]['scores']` must have shape (2,)",
        ),
        (_img([], []), [_img([])], {}, "wrap a single image's dict in a list"),
        (
            [_img([], [])],
            [_img([[0, 0, 1, 1]], labels=[-1])],
            {},
            "`targets[0]['labels']` must be class indices >= 0",
        ),
    ],
)
def test_bad_input_gives_one_line_error(preds, targets, kwargs, message: str) -> None:
    with pytest.raises(TrainmedicError) as info:
        match_detections(preds, targets, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)
