"""Grounding: RefCOCO boxes and PixMo points inside masks.

Mirrors `datbench/datasets_scoring/refcoco.py` (recall@0.5 of the predicted box, 0-1 or 0-1000 coordinates)
and `pixmo_points_eval.py` (F1 of Hungarian-matched points falling inside the targets' masks).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxprune.metrics.extract import Details, Sample

# ----------------------------------------------------------------------------------------------
# Grounding
# ----------------------------------------------------------------------------------------------

_REFCOCO_THRESHOLDS = (0.3, 0.5, 0.7)


def _refcoco_box(text: str) -> list[float]:
  """First four numbers of the last flat \\boxed{} (else of the first [...] list); zeros if none."""
  if not text:
    return [0.0] * 4
  candidates = []
  boxed = re.findall(r"\\+boxed\{([^}]*)\}", text)
  if boxed:
    candidates.append(boxed[-1])
  bracket = re.search(r"\[([^\]]+)\]", text)
  if bracket:
    candidates.append(bracket.group(0))
  for cand in candidates:
    nums = re.findall(r"-?\d+(?:\.\d+)?", cand)
    if len(nums) >= 4:
      return [float(n) for n in nums[:4]]
  return [0.0] * 4


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
  """IoU of [x1, y1, x2, y2] boxes; inverted boxes have zero area."""
  iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = iw * ih
  union = (max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
           - inter)
  return inter / union if union > 0 else 0.0


def score_refcoco(sample: Sample, output: str) -> Details:
  """refcoco.py `score_sample`: recall@0.5 of the predicted box against metadata `bbox` (0-1 units)."""
  raw = _refcoco_box(output)
  # 0-1 coordinates are kept; anything larger is read as the 0-1000 grid; then clipped to [0, 1].
  scale = 1.0 if max(abs(v) for v in raw) <= 1.5 else 1000.0
  pred = [min(1.0, max(0.0, v / scale)) for v in raw]
  gt = [float(v) for v in sample["bbox"]]
  iou = box_iou(gt, pred)
  cx, cy = 0.5 * (pred[0] + pred[2]), 0.5 * (pred[1] + pred[3])
  out = {"iou": iou, "center_acc": float(gt[0] <= cx <= gt[2] and gt[1] <= cy <= gt[3]), "pred_bbox": pred}
  for t in _REFCOCO_THRESHOLDS:
    out[f"recall@{t}"] = float(iou >= t)
  out["score"] = out["recall@0.5"]
  return out


_NO_TARGET_PHRASES = (
    "no target", "no such object", "no object", "no object found", "no target found", "no target present",
    "target not found", "object not found", "not present", "is not present", "absent", "missing",
    "cannot find", "cannot locate", "can't find", "can't locate")


def _clip01(v: float) -> float:
  return max(0.0, min(1.0, v))


def _pixmo_pred_point(x: float, y: float) -> tuple[float, float] | None:
  if max(abs(x), abs(y)) <= 1.0:
    return _clip01(x), _clip01(y)
  if min(x, y) < 0.0:
    return None
  return _clip01(min(x, 1000.0) / 1000.0), _clip01(min(y, 1000.0) / 1000.0)


def _pixmo_gt_point(x: float, y: float) -> tuple[float, float] | None:
  m = max(abs(x), abs(y))
  if m <= 1.0:
    return _clip01(x), _clip01(y)
  if m <= 100.0:  # ground truth is usually in percent
    return _clip01(x / 100.0), _clip01(y / 100.0)
  return _pixmo_pred_point(x, y)


_PAIR = r"(\d+(?:\.\d+)?)"


def _pixmo_points(text: str) -> list[tuple[float, float]]:
  """pixmo_points_eval `_parse_coordinates_from_response`: boxed, then (x, y), then [x, y], then x, y."""
  text = text.strip()
  for content in reversed(re.findall(r"\\+boxed\{([^}]*)\}", text)):
    pts = []
    # Both patterns run over the box and their hits are concatenated, as in the reference.
    for rx in (rf"{_PAIR}\s*,\s*{_PAIR}", rf"{_PAIR}\s+([0-9]+(?:\.\d+)?)"):
      for xs, ys in re.findall(rx, content):
        p = _pixmo_pred_point(float(xs), float(ys))
        if p is not None:
          pts.append(p)
    if pts:
      return pts
  for rx in (rf"\({_PAIR}\s*,\s*{_PAIR}\)", rf"\[{_PAIR}\s*,\s*{_PAIR}\]", rf"{_PAIR}\s*,\s*{_PAIR}"):
    pts = [p for p in (_pixmo_pred_point(float(xs), float(ys)) for xs, ys in re.findall(rx, text))
           if p is not None]
    if pts:
      return pts
  return []


def _pixmo_gt_points(points: Sequence[Any]) -> list[tuple[float, float]]:
  out = []
  for pt in points or []:
    if isinstance(pt, Mapping) and "x" in pt and "y" in pt:
      xy = (float(pt["x"]), float(pt["y"]))
    elif isinstance(pt, (list, tuple)) and len(pt) >= 2:
      try:
        xy = (float(pt[0]), float(pt[1]))
      except (TypeError, ValueError):
        continue
    else:
      continue
    p = _pixmo_gt_point(*xy)
    if p is not None:
      out.append(p)
  return out


def _in_mask(point: tuple[float, float], mask: Sequence[Sequence[Any]]) -> bool:
  if not mask or not mask[0]:
    return False
  h, w = len(mask), len(mask[0])
  x, y = int(point[0] * w), int(point[1] * h)
  return 0 <= y < h and 0 <= x < w and bool(mask[y][x])


def score_pixmo_points(sample: Sample, output: str) -> Details:
  """pixmo_points_eval.py `score_sample`: F1 of Hungarian-matched points inside the targets' masks."""
  from scipy.optimize import linear_sum_assignment  # Lazy: only PixMo items need scipy.

  pred = _pixmo_points(output)
  gt = _pixmo_gt_points(sample.get("points", []))
  masks = sample.get("masks", [])
  has_target = sample.get("has_target", len(gt) > 0)
  score = precision = recall = 0.0
  if not has_target:
    score = float(any(p in output.lower() for p in _NO_TARGET_PHRASES))
  elif gt and pred:
    # [P, G] Euclidean distances, computed as the reference does (sqrt of the sum) so ties break alike
    cost = np.array([[np.sqrt((p[0] - g[0]) ** 2 + (p[1] - g[1]) ** 2) for g in gt] for p in pred])
    rows, cols = linear_sum_assignment(cost)
    hits = sum(1 for r, c in zip(rows, cols) if c < len(masks) and _in_mask(pred[r], masks[c]))
    precision, recall = hits / len(pred), hits / len(gt)
    score = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
  return {"score": score, "precision": precision, "recall": recall, "has_target": has_target,
          "predicted_points": pred}
