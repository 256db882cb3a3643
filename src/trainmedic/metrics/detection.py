"""Object-detection metrics: greedy matching, per-class TP/FP/FN and COCO-style average precision.

Matching follows pycocotools (and so torchmetrics' ``MeanAveragePrecision``), per image and class:
detections are taken in descending score order (ties keep input order); each one is matched to the
not-yet-matched ground truth of the same class with the highest IoU, provided that IoU is ``>=`` the
threshold (an IoU of exactly 0.5 is a match at 0.5). Each ground truth is matched at most once, so a
duplicate detection is a false positive, and a detection of the wrong class never matches.

Average precision uses COCO's 101-point interpolation: precision made monotone from the right, read at
recall 0, 0.01, …, 1 (0 beyond the highest recall reached), and averaged. Differences from pycocotools:
no area ranges, no crowd boxes, and no cap of 100 detections per image (every detection counts).

Zero division (as in classification, never NaN): precision = TP / (TP + FP) is 0 for a class never
predicted; recall = TP / (TP + FN) is 0 for a class with no ground truth. A class with no ground truth has
no defined AP: like COCO, it is left out of the mAP (its per-class AP reads 0) and listed in
``classes_without_targets``. With no ground truth at all, the mAP is 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import TrainmedicError
from ._checks import as_tensor, check_num_classes, shape_of, to_class_indices
from .boxes import _iou

__all__ = [
    "COCO_IOU_THRESHOLDS",
    "DetectionMatches",
    "DetectionMetrics",
    "average_precision",
    "detection_matches",
    "match_detections",
]

#: The ten IoU thresholds of COCO's mAP@[0.50:0.95], computed as pycocotools does (same float values).
COCO_IOU_THRESHOLDS: tuple[float, ...] = tuple(
    float(t) for t in np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
)
_RECALL_POINTS = np.linspace(0.0, 1.0, int(np.round((1.0 - 0.0) / 0.01)) + 1, endpoint=True)
_CHUNK_ELEMENTS = 4_000_000  # IoU cells per vectorised chunk (≈ 32 MB in float64)


def _iou_thresholds(iou_threshold: float) -> tuple[list[float], int]:
    """COCO's ten thresholds plus ``iou_threshold`` (reused when it is one of them); its index."""
    try:
        thr = float(iou_threshold)
    except (TypeError, ValueError):
        raise TrainmedicError(f"`iou_threshold` must be a number in (0, 1]; got {iou_threshold!r}") from None
    if not 0.0 < thr <= 1.0:
        raise TrainmedicError(f"`iou_threshold` must be a number in (0, 1]; got {iou_threshold!r}")
    thresholds = list(COCO_IOU_THRESHOLDS)
    for i, t in enumerate(thresholds):
        if abs(t - thr) < 1e-12:
            return thresholds, i
    return [*thresholds, thr], len(thresholds)


# --------------------------------------------------------------------------------------------- validation


def _field(d: Mapping[str, Any], key: str, name: str, i: int, required: tuple[str, ...]) -> Tensor:
    if key not in d:
        hint = " (predictions and targets swapped?)" if key == "scores" else ""
        raise TrainmedicError(
            f"`{name}[{i}]` must be a dict with keys {', '.join(map(repr, required))}; got keys {sorted(map(str, d))}{hint}"
        )
    return as_tensor(d[key], f"{name}[{i}][{key!r}]")


def _check_image_lists(preds: Any, targets: Any) -> None:
    for name, value in (("preds", preds), ("targets", targets)):
        if isinstance(value, Mapping) or not isinstance(value, Sequence):
            raise TrainmedicError(
                f"`{name}` must be a list with one dict per image; got {type(value).__name__}"
                + (" (wrap a single image's dict in a list)" if isinstance(value, Mapping) else "")
            )
    if len(preds) == 0:
        raise TrainmedicError("`preds` must hold at least one image; got an empty list")
    if len(preds) != len(targets):
        raise TrainmedicError(
            f"`targets` must have one dict per image of `preds` ({len(preds)}); got {len(targets)}"
        )


def _image_tensors(
    items: Sequence[Any], name: str, with_scores: bool
) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """Pull boxes (and scores) and labels out of each image's dict, checking keys and shapes."""
    required = ("boxes", "scores", "labels") if with_scores else ("boxes", "labels")
    boxes: list[Tensor] = []
    scores: list[Tensor] = []
    labels: list[Tensor] = []
    for i, d in enumerate(items):
        if not isinstance(d, Mapping):
            raise TrainmedicError(
                f"`{name}[{i}]` must be a dict with keys {', '.join(map(repr, required))}; got {type(d).__name__}"
            )
        b = _field(d, "boxes", name, i, required)
        lab = _field(d, "labels", name, i, required)
        if b.numel() == 0:
            b = b.reshape(0, 4)
        if b.ndim != 2 or b.shape[1] != 4:
            raise TrainmedicError(
                f"`{name}[{i}]['boxes']` must have shape [K, 4] (xyxy); got shape {shape_of(b)}"
            )
        lab = lab.reshape(-1) if lab.ndim == 0 or lab.numel() == 0 else lab
        if lab.ndim != 1 or lab.shape[0] != b.shape[0]:
            raise TrainmedicError(
                f"`{name}[{i}]['labels']` must have shape ({b.shape[0]},), one per box; got shape {shape_of(lab)}"
            )
        boxes.append(b.to("cpu", torch.float64))
        labels.append(to_class_indices(lab.cpu(), f"{name}[{i}]['labels']"))
        if with_scores:
            s = _field(d, "scores", name, i, required)
            s = s.reshape(-1) if s.ndim == 0 or s.numel() == 0 else s
            if s.ndim != 1 or s.shape[0] != b.shape[0]:
                raise TrainmedicError(
                    f"`{name}[{i}]['scores']` must have shape ({b.shape[0]},), one per box; got shape {shape_of(s)}"
                )
            scores.append(s.to("cpu", torch.float64))
    return boxes, scores, labels


def _image_of(flat_index: int, counts: Tensor) -> tuple[int, int]:
    """Map an index into the concatenation back to (image, box)."""
    ends = torch.cumsum(counts, 0)
    img = int(torch.searchsorted(ends, torch.tensor(flat_index), right=True))
    start = int(ends[img] - counts[img])
    return img, flat_index - start


def _check_values(boxes: Tensor, labels: Tensor, counts: Tensor, name: str, num_classes: int | None) -> None:
    """Value checks on the concatenation of all images (one pass, not one per image)."""
    if boxes.numel():
        bad = ~torch.isfinite(boxes).all(dim=1)
        if bool(bad.any()):
            img, k = _image_of(int(torch.nonzero(bad)[0]), counts)
            raise TrainmedicError(
                f"`{name}[{img}]['boxes']` must hold finite coordinates; got box {k} with NaN or Inf"
            )
        bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
        if bool(bad.any()):
            j = int(torch.nonzero(bad)[0])
            img, k = _image_of(j, counts)
            raise TrainmedicError(
                f"`{name}[{img}]['boxes']` must be xyxy with x2 >= x1 and y2 >= y1; got box {k} = {boxes[j].tolist()} "
                "(xywh or cxcywh boxes? convert with box_convert)"
            )
    if labels.numel():
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or (num_classes is not None and hi >= num_classes):
            bad_value = lo if lo < 0 else hi
            j = int(torch.nonzero(labels == bad_value)[0])
            img, k = _image_of(j, counts)
            expect = f"[0, {num_classes})" if num_classes is not None else ">= 0"
            raise TrainmedicError(
                f"`{name}[{img}]['labels']` must be class indices {expect}; got {bad_value} (box {k})"
            )


# ---------------------------------------------------------------------------------------------- matching


@dataclass
class DetectionMatches:
    """What matching leaves behind, all the later maths needs; also the streaming state.

    Detections are in image order, each image's detections by descending score: the order COCO uses to
    break score ties when it accumulates precision/recall.
    """

    scores: Tensor  # [D] float64
    labels: Tensor  # [D] long
    matched: Tensor  # [D, T] bool: detection is a true positive at iou_thresholds[t]
    target_labels: Tensor  # [G] long, labels of all ground-truth boxes
    iou_thresholds: tuple[float, ...]
    num_images: int

    @staticmethod
    def cat(parts: Sequence[DetectionMatches]) -> DetectionMatches:
        """Join matches of disjoint image sets (batches, or ranks in rank order)."""
        if not parts:
            raise TrainmedicError("`parts` must hold at least one DetectionMatches; got none (no updates?)")
        return DetectionMatches(
            scores=torch.cat([p.scores for p in parts]),
            labels=torch.cat([p.labels for p in parts]),
            matched=torch.cat([p.matched for p in parts]),
            target_labels=torch.cat([p.target_labels for p in parts]),
            iou_thresholds=parts[0].iou_thresholds,
            num_images=sum(p.num_images for p in parts),
        )


def _pad(seqs: list[Tensor], value: float) -> Tensor:
    return torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=value)


def _match_chunk(
    d_boxes: list[Tensor],
    d_scores: list[Tensor],
    d_labels: list[Tensor],
    g_boxes: list[Tensor],
    g_labels: list[Tensor],
    thr: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """Greedy matching for a chunk of images at once, vectorised over images and thresholds.

    The loop runs over detection rank k (0 … max detections per image), and at each step every image
    matches its k-th best detection. Only ground truths with IoU >= the lowest threshold can ever match, so
    each detection carries just its P best candidates instead of every ground truth of its image.
    """
    t_count = thr.shape[0]
    k_counts = torch.tensor([len(s) for s in d_scores])
    b = len(d_scores)
    k_max = int(k_counts.max()) if b else 0
    if k_max == 0:
        empty = torch.zeros(0, dtype=torch.float64)
        return empty, torch.zeros(0, dtype=torch.long), torch.zeros(0, t_count, dtype=torch.bool)
    valid = torch.arange(k_max)[None, :] < k_counts[:, None]
    scores = _pad(d_scores, 0.0)
    # Descending score, stable: equal scores keep their input order (pycocotools uses a stable mergesort).
    order = torch.sort(
        torch.where(valid, scores, torch.full_like(scores, -torch.inf)), dim=1, descending=True, stable=True
    ).indices
    valid_sorted = valid.gather(1, order)
    scores = scores.gather(1, order)
    labels = _pad(d_labels, -1).gather(1, order)
    boxes = _pad(d_boxes, 0.0).gather(1, order[..., None].expand(b, k_max, 4))
    matched_det = torch.zeros(b, k_max, t_count, dtype=torch.bool)

    g_max = max(len(g) for g in g_labels)
    if g_max > 0:
        gt_boxes = _pad(g_boxes, 0.0)
        gt_labels = _pad(g_labels, -2)
        iou = _iou(boxes, gt_boxes)  # [B, K, G]
        same_class = labels[:, :, None] == gt_labels[:, None, :]
        iou = torch.where(same_class & valid_sorted[:, :, None], iou, torch.full_like(iou, -1.0))
        min_thr = float(thr.min())
        p = int((iou >= min_thr).sum(-1).max())
        if p > 0:
            cand_iou, cand_idx = torch.topk(iou, p, dim=-1)  # [B, K, P]
            matched_gt = torch.zeros(b, t_count, g_max, dtype=torch.bool)
            bi = torch.arange(b)[:, None].expand(b, t_count)
            ti = torch.arange(t_count)[None, :].expand(b, t_count)
            thr_b = thr[None, :, None]
            for k in range(k_max):
                vals = cand_iou[:, k, None, :]  # [B, 1, P]
                idx = cand_idx[:, k, None, :].expand(b, t_count, p)  # [B, T, P]
                ok = (vals >= thr_b) & ~matched_gt.gather(2, idx)
                if not bool(ok.any()):
                    continue
                masked = torch.where(ok, vals.expand(b, t_count, p), torch.full((), -1.0, dtype=vals.dtype))
                best = masked.max(-1, keepdim=True).values
                # Among equal best IoUs pycocotools keeps the last ground truth: take the largest index.
                chosen = (
                    torch.where(ok & (masked == best), idx, torch.full((), -1, dtype=idx.dtype))
                    .max(-1)
                    .values
                )
                hit = chosen >= 0  # [B, T]
                matched_det[:, k, :] = hit
                cols = chosen.clamp(min=0)
                matched_gt[bi, ti, cols] = matched_gt[bi, ti, cols] | hit
    return scores[valid_sorted], labels[valid_sorted], matched_det[valid_sorted]


def detection_matches(
    preds: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS,
    num_classes: int | None = None,
) -> DetectionMatches:
    """Validate one batch of images and match its detections at every IoU threshold."""
    num_classes = check_num_classes(num_classes)
    _check_image_lists(preds, targets)
    d_boxes, d_scores, d_labels = _image_tensors(preds, "preds", with_scores=True)
    g_boxes, _, g_labels = _image_tensors(targets, "targets", with_scores=False)
    d_counts = torch.tensor([len(x) for x in d_labels])
    g_counts = torch.tensor([len(x) for x in g_labels])
    all_scores = torch.cat(d_scores)
    if bool(torch.isnan(all_scores).any()):
        img, k = _image_of(int(torch.nonzero(torch.isnan(all_scores))[0]), d_counts)
        raise TrainmedicError(f"`preds[{img}]['scores']` must not contain NaN; got NaN at box {k}")
    _check_values(torch.cat(d_boxes), torch.cat(d_labels), d_counts, "preds", num_classes)
    _check_values(torch.cat(g_boxes), torch.cat(g_labels), g_counts, "targets", num_classes)

    # IoU 1 is capped just below 1 as pycocotools does, so rounding never loses a perfect match.
    thr = torch.tensor([min(float(t), 1 - 1e-10) for t in iou_thresholds], dtype=torch.float64)
    out_scores: list[Tensor] = []
    out_labels: list[Tensor] = []
    out_matched: list[Tensor] = []
    start = 0
    n = len(d_boxes)
    while start < n:
        # Grow the chunk while the padded IoU block stays within budget.
        end, k_max, g_max = start, 1, 1
        while end < n:
            k2, g2 = max(k_max, len(d_labels[end])), max(g_max, len(g_labels[end]))
            if end > start and (end - start + 1) * k2 * g2 > _CHUNK_ELEMENTS:
                break
            k_max, g_max, end = k2, g2, end + 1
        s, lab, m = _match_chunk(
            d_boxes[start:end],
            d_scores[start:end],
            d_labels[start:end],
            g_boxes[start:end],
            g_labels[start:end],
            thr,
        )
        out_scores.append(s)
        out_labels.append(lab)
        out_matched.append(m)
        start = end
    return DetectionMatches(
        scores=torch.cat(out_scores),
        labels=torch.cat(out_labels),
        matched=torch.cat(out_matched),
        target_labels=torch.cat(g_labels),
        iou_thresholds=tuple(float(t) for t in iou_thresholds),
        num_images=n,
    )


# ------------------------------------------------------------------------------------- average precision


def average_precision(matched: np.ndarray, num_targets: int) -> np.ndarray:
    """COCO 101-point AP of one class, for each column of ``matched`` ([D, T], sorted by descending score)."""
    if num_targets <= 0:
        return np.zeros(matched.shape[1])
    if matched.shape[0] == 0:
        return np.zeros(matched.shape[1])
    tp = np.cumsum(matched, axis=0, dtype=np.float64)
    fp = np.cumsum(~matched, axis=0, dtype=np.float64)
    recall = tp / num_targets
    precision = tp / (tp + fp)
    precision = np.maximum.accumulate(precision[::-1], axis=0)[::-1]  # monotone from the right
    ap = np.zeros(matched.shape[1])
    for t in range(matched.shape[1]):
        idx = np.searchsorted(recall[:, t], _RECALL_POINTS, side="left")
        reached = idx < len(recall)
        q = np.zeros(len(_RECALL_POINTS))
        q[reached] = precision[idx[reached], t]
        ap[t] = q.mean()
    return ap


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    num, den = num.to(torch.float64), den.to(torch.float64)
    return torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(num))


def _mean_over(values: Tensor, mask: Tensor) -> float:
    return float(values[mask].mean()) if bool(mask.any()) else 0.0


@dataclass
class DetectionMetrics:
    """Per-class counts at ``iou_threshold``, AP per class and the mAPs; see the module docstring."""

    num_classes: int
    num_images: int
    iou_threshold: float
    tp: Tensor  # [C] long, at iou_threshold
    fp: Tensor
    fn: Tensor
    support: Tensor  # [C] long, ground-truth boxes per class
    predicted: Tensor  # [C] long, detections per class
    precision: Tensor  # [C] float64, at iou_threshold
    recall: Tensor
    f1: Tensor
    ap: Tensor  # [C] AP at iou_threshold
    ap_50: Tensor  # [C] AP at IoU 0.5
    ap_50_95: Tensor  # [C] AP averaged over IoU 0.50:0.05:0.95
    map: float  # mean AP at iou_threshold over classes with ground truth
    map_50: float
    map_50_95: float
    precision_micro: float  # pooled over all classes
    recall_micro: float
    f1_micro: float
    classes_without_targets: list[int] = field(default_factory=list)  # left out of the mAPs
    classes_without_predictions: list[int] = field(default_factory=list)

    @classmethod
    def from_matches(
        cls, m: DetectionMatches, iou_threshold: float = 0.5, num_classes: int | None = None
    ) -> DetectionMetrics:
        thresholds = list(m.iou_thresholds)
        try:
            ti = next(i for i, t in enumerate(thresholds) if abs(t - float(iou_threshold)) < 1e-12)
        except StopIteration:
            raise TrainmedicError(
                f"`iou_threshold` must be one of the thresholds matched ({thresholds}); got {iou_threshold!r}"
            ) from None
        coco = [next(i for i, t in enumerate(thresholds) if abs(t - c) < 1e-12) for c in COCO_IOU_THRESHOLDS]
        seen = max(
            int(m.labels.max()) if m.labels.numel() else -1,
            int(m.target_labels.max()) if m.target_labels.numel() else -1,
        )
        checked = check_num_classes(num_classes)
        c: int = checked if checked is not None else seen + 1
        if seen >= c:
            raise TrainmedicError(
                f"`num_classes` must exceed every label; got num_classes={c} and label {seen}"
            )

        support = torch.bincount(m.target_labels, minlength=c)
        predicted = torch.bincount(m.labels, minlength=c)
        tp = torch.bincount(m.labels, weights=m.matched[:, ti].to(torch.float64), minlength=c).round().long()
        fp = predicted - tp
        fn = support - tp

        # Sort by descending score (stable: ties stay in image order), then group by class (stable again).
        order = torch.sort(m.scores, descending=True, stable=True).indices
        order = order[torch.sort(m.labels[order], stable=True).indices]
        sorted_labels = m.labels[order].numpy()
        sorted_matched = m.matched[order].numpy()
        bounds = np.searchsorted(sorted_labels, np.arange(c + 1), side="left")
        ap_all = np.zeros((c, len(thresholds)))
        for k in range(c):
            n_gt = int(support[k])
            if n_gt:
                ap_all[k] = average_precision(sorted_matched[bounds[k] : bounds[k + 1]], n_gt)
        ap_t = torch.from_numpy(ap_all)
        has_gt = support > 0
        ap_coco = ap_t[:, coco]
        tp_sum, fp_sum, fn_sum = int(tp.sum()), int(fp.sum()), int(fn.sum())
        return cls(
            num_classes=c,
            num_images=m.num_images,
            iou_threshold=float(iou_threshold),
            tp=tp,
            fp=fp,
            fn=fn,
            support=support,
            predicted=predicted,
            precision=_safe_div(tp, tp + fp),
            recall=_safe_div(tp, tp + fn),
            f1=_safe_div(2 * tp, 2 * tp + fp + fn),
            ap=ap_t[:, ti].clone(),
            ap_50=ap_coco[:, 0].clone(),
            ap_50_95=ap_coco.mean(dim=1) if c else torch.zeros(0, dtype=torch.float64),
            map=_mean_over(ap_t[:, ti], has_gt),
            map_50=_mean_over(ap_coco[:, 0], has_gt),
            map_50_95=_mean_over(ap_coco.mean(dim=1), has_gt) if c else 0.0,
            precision_micro=tp_sum / (tp_sum + fp_sum) if tp_sum + fp_sum else 0.0,
            recall_micro=tp_sum / (tp_sum + fn_sum) if tp_sum + fn_sum else 0.0,
            f1_micro=2 * tp_sum / (2 * tp_sum + fp_sum + fn_sum) if tp_sum + fp_sum + fn_sum else 0.0,
            classes_without_targets=[int(i) for i in torch.nonzero(~has_gt).flatten()],
            classes_without_predictions=[int(i) for i in torch.nonzero(predicted == 0).flatten()],
        )

    def scalars(self) -> dict[str, float]:
        """The flat name → float view that the run recorder stores (precision/recall pooled over classes)."""
        return {
            "map_50": self.map_50,
            "map_50_95": self.map_50_95,
            "map": self.map,
            "precision": self.precision_micro,
            "recall": self.recall_micro,
            "f1": self.f1_micro,
            "tp": float(self.tp.sum()),
            "fp": float(self.fp.sum()),
            "fn": float(self.fn.sum()),
            "iou_threshold": self.iou_threshold,
            "num_images": float(self.num_images),
        }

    def per_class(self) -> dict[str, list[float] | list[int]]:
        """Per-class lists, index = class id."""
        return {
            "ap": [float(v) for v in self.ap.tolist()],
            "ap_50": [float(v) for v in self.ap_50.tolist()],
            "ap_50_95": [float(v) for v in self.ap_50_95.tolist()],
            "precision": [float(v) for v in self.precision.tolist()],
            "recall": [float(v) for v in self.recall.tolist()],
            "f1": [float(v) for v in self.f1.tolist()],
            "support": [int(v) for v in self.support.tolist()],
            "predicted": [int(v) for v in self.predicted.tolist()],
            "tp": [int(v) for v in self.tp.tolist()],
            "fp": [int(v) for v in self.fp.tolist()],
            "fn": [int(v) for v in self.fn.tolist()],
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able python: floats, ints and lists only."""
        return {
            "task": "detection",
            "num_classes": self.num_classes,
            "scalars": self.scalars(),
            "per_class": self.per_class(),
            "classes_without_targets": list(self.classes_without_targets),
            "classes_without_predictions": list(self.classes_without_predictions),
        }


def match_detections(
    preds: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    iou_threshold: float = 0.5,
    num_classes: int | None = None,
) -> DetectionMetrics:
    """Match detections to ground truth and score them.

    ``preds``: one dict per image, ``{"boxes": [K, 4] xyxy, "scores": [K], "labels": [K]}``; ``targets``:
    ``{"boxes": [G, 4] xyxy, "labels": [G]}``. TP/FP/FN, precision and recall are counted at
    ``iou_threshold``; AP@0.5 and AP@[0.50:0.95] always use COCO's thresholds. ``num_classes`` defaults to
    the largest label seen + 1.
    """
    thresholds, _ = _iou_thresholds(iou_threshold)
    matches = detection_matches(preds, targets, thresholds, num_classes)
    return DetectionMetrics.from_matches(matches, iou_threshold, num_classes)
