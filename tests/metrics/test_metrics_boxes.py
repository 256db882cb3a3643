"""Box conversion and IoU against a naive per-pair loop."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainmedic.errors import TrainmedicError
from trainmedic.metrics import box_convert, box_iou


def _naive_iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


_box = st.tuples(st.floats(0, 50), st.floats(0, 50), st.floats(0, 30), st.floats(0, 30)).map(
    lambda r: [r[0], r[1], r[0] + r[2], r[1] + r[3]]
)


@settings(max_examples=50, deadline=None)
@given(st.lists(_box, min_size=1, max_size=6), st.lists(_box, min_size=1, max_size=6))
def test_box_iou_matches_naive_loop(a, b) -> None:
    got = box_iou(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
    expected = torch.tensor([[_naive_iou(x, y) for y in b] for x in a], dtype=torch.float64)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)


def test_box_iou_of_identical_boxes_with_a_subnormal_area_is_one() -> None:
    box = torch.tensor([[0.0, 0.0, 1.0, 5e-324]], dtype=torch.float64)  # found by hypothesis
    assert box_iou(box, box).item() == 1.0


def test_box_iou_exact_half_and_degenerate() -> None:
    iou = box_iou(
        torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[0.0, 0, 10, 5], [5, 5, 5, 5], [20, 20, 30, 30]])
    )
    assert iou.tolist() == [[0.5, 0.0, 0.0]]
    assert box_iou(torch.tensor([[1.0, 1, 1, 1]]), torch.tensor([[1.0, 1, 1, 1]])).item() == 0.0  # no NaN
    assert box_iou(torch.zeros(0, 4), torch.tensor([[0.0, 0, 1, 1]])).shape == (0, 1)


@settings(max_examples=40, deadline=None)
@given(st.lists(_box, min_size=1, max_size=5), st.sampled_from(["xywh", "cxcywh", "xyxy"]))
def test_box_convert_round_trips(boxes, fmt: str) -> None:
    xyxy = torch.tensor(boxes, dtype=torch.float64)
    there = box_convert(xyxy, "xyxy", fmt)
    torch.testing.assert_close(box_convert(there, fmt, "xyxy"), xyxy)


def test_box_convert_known_values() -> None:
    xyxy = torch.tensor([[10.0, 20, 30, 60]])
    assert box_convert(xyxy, "xyxy", "xywh").tolist() == [[10, 20, 20, 40]]
    assert box_convert(xyxy, "xyxy", "cxcywh").tolist() == [[20, 40, 20, 40]]
    assert box_convert(torch.tensor([[20.0, 40, 20, 40]]), "cxcywh", "xywh").tolist() == [[10, 20, 20, 40]]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: box_iou(torch.tensor([[5.0, 0, 1, 1]]), torch.zeros(1, 4)), "x2 >= x1"),
        (lambda: box_iou(torch.zeros(2, 3), torch.zeros(1, 4)), "`boxes1` must have shape [K, 4]"),
        (lambda: box_iou(torch.zeros(1, 4), torch.tensor([[0.0, float("nan"), 1, 1]])), "finite"),
        (lambda: box_convert(torch.zeros(1, 4), "xyxy", "yolo"), "`out_fmt` must be one of"),
        (lambda: box_convert(torch.tensor([[0.0, 0, -1, 2]]), "xywh", "xyxy"), "width >= 0"),
    ],
)
def test_bad_boxes_give_one_line_error(call, message: str) -> None:
    with pytest.raises(TrainmedicError, match=None) as info:
        call()
    assert message in str(info.value) and "\n" not in str(info.value)
