"""Bounding-box helpers: format conversion and pairwise IoU (no torchvision, which does not import here)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import TrainmedicError
from ._checks import as_tensor, shape_of

__all__ = ["BOX_FORMATS", "box_convert", "box_iou", "check_boxes"]

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


def check_boxes(boxes: Any, name: str = "boxes", fmt: str = "xyxy") -> Tensor:
    """Return ``boxes`` as a float ``[K, 4]`` tensor, refusing NaN, wrong shapes and inverted corners.

    An empty tensor of any shape (``torch.empty(0)``) is read as zero boxes.
    """
    b = as_tensor(boxes, name)
    if b.numel() == 0:
        return b.reshape(0, 4).to(b.dtype if b.is_floating_point() else torch.float32)
    if b.ndim != 2 or b.shape[1] != 4:
        raise TrainmedicError(f"`{name}` must have shape [K, 4] ({fmt}); got shape {shape_of(b)}")
    if not b.is_floating_point():
        b = b.to(torch.float32)
    if not bool(torch.isfinite(b).all()):
        raise TrainmedicError(f"`{name}` must hold finite coordinates; got NaN or Inf")
    if fmt == "xyxy":
        bad = (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
        if bool(bad.any()):
            i = int(torch.nonzero(bad)[0])
            raise TrainmedicError(
                f"`{name}` must be xyxy boxes with x2 >= x1 and y2 >= y1; got box {i} = {b[i].tolist()} "
                "(xywh or cxcywh boxes? convert with box_convert)"
            )
    else:
        bad = (b[:, 2] < 0) | (b[:, 3] < 0)
        if bool(bad.any()):
            i = int(torch.nonzero(bad)[0])
            raise TrainmedicError(
                f"`{name}` must be {fmt} boxes with width >= 0 and height >= 0; got box {i} = {b[i].tolist()}"
            )
    return b


def _check_format(fmt: str, name: str) -> str:
    if fmt not in BOX_FORMATS:
        raise TrainmedicError(f"`{name}` must be one of {', '.join(BOX_FORMATS)}; got {fmt!r}")
    return fmt


def box_convert(boxes: Any, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert ``[K, 4]`` boxes between ``xyxy`` (corners), ``xywh`` (corner + size), ``cxcywh`` (centre + size)."""
    _check_format(in_fmt, "in_fmt")
    _check_format(out_fmt, "out_fmt")
    b = check_boxes(boxes, "boxes", in_fmt)
    if in_fmt == out_fmt:
        return b.clone()
    a0, a1, a2, a3 = b.unbind(-1)
    if in_fmt == "xywh":
        x1, y1, x2, y2 = a0, a1, a0 + a2, a1 + a3
    elif in_fmt == "cxcywh":
        x1, y1, x2, y2 = a0 - a2 / 2, a1 - a3 / 2, a0 + a2 / 2, a1 + a3 / 2
    else:
        x1, y1, x2, y2 = a0, a1, a2, a3
    if out_fmt == "xyxy":
        out = (x1, y1, x2, y2)
    elif out_fmt == "xywh":
        out = (x1, y1, x2 - x1, y2 - y1)
    else:
        out = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
    return torch.stack(out, dim=-1)


def _iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU of validated xyxy boxes; works on batched ``[..., N, 4]`` × ``[..., M, 4]`` too."""
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[..., :, None] + area_b[..., None, :] - inter
    # Two zero-area boxes have union 0: they overlap nowhere, so IoU 0 rather than NaN. The divisor is replaced
    # only where the union is 0 (not clamped to the smallest normal float, which broke subnormal unions).
    positive = union > 0
    return torch.where(
        positive, inter / torch.where(positive, union, torch.ones_like(union)), torch.zeros_like(inter)
    )


def box_iou(boxes1: Any, boxes2: Any) -> Tensor:
    """Intersection over union of every pair: ``[N, 4]`` × ``[M, 4]`` xyxy boxes → ``[N, M]``."""
    a = check_boxes(boxes1, "boxes1")
    b = check_boxes(boxes2, "boxes2")
    dtype = torch.promote_types(a.dtype, b.dtype)
    return _iou(a.to(dtype), b.to(device=a.device, dtype=dtype))
