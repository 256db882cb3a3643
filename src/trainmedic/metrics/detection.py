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
from ._checks import as_tensor, check_num_classes, float_list, int_list, shape_of, to_class_indices

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
_PAIR_BUDGET = 4_000_000  # same-image, same-class (detection, ground truth) pairs per IoU chunk


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


def _pair_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of matching rows of two validated xyxy box lists (``[P, 4]`` each → ``[P]``), float64."""
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return torch.where(
        union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), torch.zeros_like(inter)
    )


def _candidates(
    d_boxes: Tensor, d_keys: Tensor, g_boxes: Tensor, g_keys: Tensor, min_thr: float
) -> tuple[Tensor, Tensor, Tensor]:
    """All (detection, ground truth) pairs of the same image and class whose IoU can reach ``min_thr``.

    Only same-image, same-class pairs are ever formed (a sorted join on ``image * C + label``), so the work
    is the number of such pairs, not images × detections × ground truths.
    """
    g_order = torch.sort(g_keys, stable=True).indices
    g_sorted = g_keys[g_order]
    start = torch.searchsorted(g_sorted, d_keys, right=False)
    n_pairs = torch.searchsorted(g_sorted, d_keys, right=True) - start
    ends = torch.cumsum(n_pairs, 0)
    out_d: list[Tensor] = []
    out_g: list[Tensor] = []
    out_iou: list[Tensor] = []
    a, n_det = 0, d_keys.shape[0]
    while a < n_det:
        # The largest run of detections whose pairs fit the budget (at least one detection).
        base = int(ends[a - 1]) if a else 0
        b = max(a + 1, int(torch.searchsorted(ends, torch.tensor(base + _PAIR_BUDGET), right=True)))
        b = min(b, n_det)
        counts = n_pairs[a:b]
        total = int(counts.sum())
        if total:
            pd = torch.repeat_interleave(torch.arange(a, b), counts)
            first = torch.cumsum(counts, 0) - counts
            pos = start[pd] + torch.arange(total) - first[pd - a]
            pg = g_order[pos]
            iou = _pair_iou(d_boxes[pd], g_boxes[pg])
            keep = iou >= min_thr
            out_d.append(pd[keep])
            out_g.append(pg[keep])
            out_iou.append(iou[keep])
        a = b
    if not out_d:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty, torch.zeros(0, dtype=torch.float64)
    return torch.cat(out_d), torch.cat(out_g), torch.cat(out_iou)


def _greedy_match(
    d_keys: Tensor, n_gt: int, pair_d: Tensor, pair_g: Tensor, pair_iou: Tensor, thr: Tensor
) -> Tensor:
    """pycocotools' greedy rule for every threshold at once; returns ``[D, T]`` matched flags.

    Detections must come sorted by image, then descending score. Only detections of the same image and
    class compete for ground truths, so the loop runs over a detection's rank inside its (image, class)
    group, and each step handles every group at once: as many steps as the largest group has
    detections with a candidate, not as many as there are detections.
    """
    n_det, t_count = d_keys.shape[0], thr.shape[0]
    matched_det = torch.zeros(n_det, t_count, dtype=torch.bool)
    if pair_d.numel() == 0:
        return matched_det
    # Candidate table: one row per detection that has a candidate, padded with a sentinel ground truth
    # (index n_gt) that is always taken.
    per_det = torch.bincount(pair_d, minlength=n_det)
    rows = torch.nonzero(per_det).flatten()  # detections with candidates, in sorted order
    row_of = torch.full((n_det,), -1, dtype=torch.long)
    row_of[rows] = torch.arange(rows.shape[0])
    first = torch.cumsum(per_det, 0) - per_det
    col = torch.arange(pair_d.shape[0]) - first[pair_d]
    p_max = int(per_det.max())
    cand_iou = torch.full((rows.shape[0], p_max), -1.0, dtype=torch.float64)
    cand_gt = torch.full((rows.shape[0], p_max), n_gt, dtype=torch.long)
    cand_iou[row_of[pair_d], col] = pair_iou
    cand_gt[row_of[pair_d], col] = pair_g
    # Rank of each candidate row inside its (image, class) group, score order kept by the stable sort.
    keys = d_keys[rows]
    by_key = torch.sort(keys, stable=True).indices
    sorted_keys = keys[by_key]
    rank = torch.empty_like(by_key)
    rank[by_key] = torch.arange(keys.shape[0]) - torch.searchsorted(sorted_keys, sorted_keys, right=False)
    by_rank = torch.sort(rank, stable=True).indices
    step_sizes = torch.bincount(rank).tolist()

    matched_gt = torch.zeros(t_count, n_gt + 1, dtype=torch.bool)
    matched_gt[:, n_gt] = True
    t_index = torch.arange(t_count)
    thr_b = thr[None, :, None]
    offset = 0
    for size in step_sizes:
        r = by_rank[offset : offset + size]
        offset += size
        vals = cand_iou[r][:, None, :]  # [R, 1, P]
        idx = cand_gt[r]  # [R, P]
        taken = matched_gt[:, idx].permute(1, 0, 2)  # [R, T, P]
        ok = (vals >= thr_b) & ~taken
        masked = torch.where(ok, vals, torch.full((), -1.0, dtype=vals.dtype))
        best = masked.max(-1, keepdim=True).values
        # Among equal best IoUs pycocotools keeps the last ground truth: take the largest index.
        idx_b = idx[:, None, :].expand_as(ok)
        chosen = torch.where(ok & (masked == best), idx_b, torch.full((), -1, dtype=idx.dtype)).max(-1).values
        hit = chosen >= 0  # [R, T]
        matched_det[rows[r]] = hit
        hit_r, hit_t = torch.nonzero(hit, as_tuple=True)
        matched_gt[t_index[hit_t], chosen[hit_r, hit_t]] = True
    return matched_det


def detection_matches(
    preds: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS,
    num_classes: int | None = None,
) -> DetectionMatches:
    """Validate one batch of images and match its detections at every IoU threshold."""
    num_classes = check_num_classes(num_classes)
    _check_image_lists(preds, targets)
    d_boxes_l, d_scores_l, d_labels_l = _image_tensors(preds, "preds", with_scores=True)
    g_boxes_l, _, g_labels_l = _image_tensors(targets, "targets", with_scores=False)
    d_counts = torch.tensor([len(x) for x in d_labels_l])
    g_counts = torch.tensor([len(x) for x in g_labels_l])
    d_boxes, scores, d_labels = torch.cat(d_boxes_l), torch.cat(d_scores_l), torch.cat(d_labels_l)
    g_boxes, g_labels = torch.cat(g_boxes_l), torch.cat(g_labels_l)
    if bool(torch.isnan(scores).any()):
        img, k = _image_of(int(torch.nonzero(torch.isnan(scores))[0]), d_counts)
        raise TrainmedicError(f"`preds[{img}]['scores']` must not contain NaN; got NaN at box {k}")
    _check_values(d_boxes, d_labels, d_counts, "preds", num_classes)
    _check_values(g_boxes, g_labels, g_counts, "targets", num_classes)

    n_images = len(d_boxes_l)
    d_img = torch.repeat_interleave(torch.arange(n_images), d_counts)
    g_img = torch.repeat_interleave(torch.arange(n_images), g_counts)
    # Image order, then descending score; stable, so equal scores keep their input order (pycocotools
    # sorts with a stable mergesort).
    order = torch.sort(scores, descending=True, stable=True).indices
    order = order[torch.sort(d_img[order], stable=True).indices]
    d_boxes, scores, d_labels, d_img = d_boxes[order], scores[order], d_labels[order], d_img[order]

    span = (
        max(int(d_labels.max()) if d_labels.numel() else 0, int(g_labels.max()) if g_labels.numel() else 0)
        + 1
    )
    d_keys, g_keys = d_img * span + d_labels, g_img * span + g_labels
    # IoU 1 is capped just below 1 as pycocotools does, so rounding never loses a perfect match.
    thr = torch.tensor([min(float(t), 1 - 1e-10) for t in iou_thresholds], dtype=torch.float64)
    pair_d, pair_g, pair_iou = _candidates(d_boxes, d_keys, g_boxes, g_keys, float(thr.min()))
    matched = _greedy_match(d_keys, g_labels.shape[0], pair_d, pair_g, pair_iou, thr)
    return DetectionMatches(
        scores=scores,
        labels=d_labels,
        matched=matched,
        target_labels=g_labels,
        iou_thresholds=tuple(float(t) for t in iou_thresholds),
        num_images=n_images,
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
            "ap": float_list(self.ap),
            "ap_50": float_list(self.ap_50),
            "ap_50_95": float_list(self.ap_50_95),
            "precision": float_list(self.precision),
            "recall": float_list(self.recall),
            "f1": float_list(self.f1),
            "support": int_list(self.support),
            "predicted": int_list(self.predicted),
            "tp": int_list(self.tp),
            "fp": int_list(self.fp),
            "fn": int_list(self.fn),
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
