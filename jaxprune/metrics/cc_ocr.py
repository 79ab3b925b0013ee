"""CC-OCR: multi-scene OCR, key information extraction and document parsing.

Mirrors `datbench/datasets_scoring/cc_ocr_multi_scene_ocr.py` (character-bag F1), `cc_ocr_kie.py` (key-value
F1 + normalised tree edit similarity; `tree_edit_distance` reproduces `zss.simple_distance`) and
`cc_ocr_doc_parsing.py` (edit similarity, TEDS for tables when apted + lxml are installed). These score the raw
output (`FULL_TEXT_SOURCES` in `jaxprune.metrics.score`).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import re
from typing import Any

from jaxprune.metrics.extract import Details, Sample, levenshtein

# ----------------------------------------------------------------------------------------------
# CC-OCR
# ----------------------------------------------------------------------------------------------


def _char_tokens(text: Any) -> list[str]:
  if not isinstance(text, str):
    return []
  text = text.replace("\t", " ").replace("\n", " ").replace("###", "").replace("***", "")
  return list(re.sub(r"[^a-z0-9]+", "", re.sub(r"\s+", " ", text).strip().lower()))


def score_cc_ocr_multi_scene(sample: Sample, output: str) -> Details:
  """cc_ocr_multi_scene_ocr.py `score_sample`: character-bag F1 over [a-z0-9] of the raw output."""
  pred, gt = _char_tokens(output), _char_tokens(sample.get("answer") or "")
  if not gt or not pred:
    f1 = recall = precision = float(not gt and not pred)
    matched = 0
  else:
    g, p = collections.Counter(gt), collections.Counter(pred)
    matched = sum(min(g[t], p[t]) for t in g)
    recall, precision = matched / len(gt), matched / len(pred)
    f1 = 2 * recall * precision / (recall + precision) if recall + precision > 0 else 0.0
  return {"score": f1, "f1_score": f1, "recall": recall, "precision": precision, "matched_tokens": matched,
          "gt_token_count": len(gt), "pred_token_count": len(pred)}


def _halfwidth(text: str) -> str:
  """Full-width ASCII forms (U+FF01..U+FF5E) and the ideographic space to their ASCII counterparts."""
  return "".join(" " if ch == "\u3000" else chr(ord(ch) - 0xFEE0) if 0xFF01 <= ord(ch) <= 0xFF5E else ch
                 for ch in text)


def _first_json(text: Any) -> Any:
  """cc_ocr_kie `_extract_json`: box contents, code fences removed, else the first balanced {...}."""
  if not isinstance(text, str):
    return {}
  m = re.search(r"<\|begin_of_box\|>(.*?)<\|end_of_box\|>", text, re.DOTALL)
  if m:
    text = m.group(1).strip()
  else:
    start = text.find("\\boxed{")
    if start != -1:
      start += len("\\boxed{")
      depth = 1
      for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if text[i] == "}" and depth == 0:
          text = text[start:i].strip()
          break
  text = re.sub(r"```\s*", "", re.sub(r"```json\s*", "", text, flags=re.IGNORECASE)).strip()
  try:
    return json.loads(text)
  except json.JSONDecodeError:
    start = text.find("{")
    if start != -1:
      depth = 0
      for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if text[i] == "}" and depth == 0:
          try:
            return json.loads(text[start:i + 1])
          except json.JSONDecodeError:
            pass
    return {}


def _kie_norm(data: Any) -> Any:
  if not isinstance(data, dict):
    return data
  out = {}
  for k, v in data.items():
    if isinstance(v, dict):
      out[k] = _kie_norm(v)
    elif isinstance(v, list):
      out[k] = [_kie_norm(x) if isinstance(x, dict) else _kie_text(str(x)) for x in v]
    elif isinstance(v, str):
      out[k] = _kie_text(v)
    else:
      out[k] = v
  return out


def _kie_text(s: str) -> str:
  return re.sub(r"\s+", " ", _halfwidth(s)).strip()


def _kie_pairs(data: Any, key: str = "") -> list[tuple[str, str]]:
  if isinstance(data, dict):
    return [p for k, v in data.items() for p in _kie_pairs(v, f"{key}.{k}" if key else k)]
  if isinstance(data, list):
    return [p for v in data for p in _kie_pairs(v, key)]
  return [(key, str(data))]


def _kie_f1(pred: Any, gt: Any) -> float:
  p, g = set(_kie_pairs(_kie_norm(pred))), set(_kie_pairs(_kie_norm(gt)))
  tp = len(p & g)
  f1 = tp / (tp + (len(p - g) + len(g - p)) / 2.0 + 1e-6)
  return min(1.0, max(0.0, f1))


@dataclasses.dataclass
class _Tree:
  label: str
  kids: list[_Tree] = dataclasses.field(default_factory=list)


def _kie_tree(data: Any, label: str = "root") -> _Tree:
  node = _Tree(str(label))
  if isinstance(data, dict):
    node.kids = [_kie_tree(v, k) for k, v in sorted(data.items())]
  elif isinstance(data, list):
    node.kids = [_kie_tree(v, f"{label}[{i}]") for i, v in enumerate(data)]
  elif data is not None and str(data).strip():
    node.kids = [_Tree(str(data))]
  return node


def tree_edit_distance(a: _Tree, b: _Tree) -> int:
  """Zhang-Shasha ordered tree edit distance with string-edit-distance label costs (zss.simple_distance
  with `editdistance` installed, as DatBench's dependencies make it): insert/delete cost = len(label)."""

  def postorder(root: _Tree) -> tuple[list[str], list[int], list[int]]:
    labels, leftmost, keyroots = [], [], []
    def walk(n: _Tree) -> int:
      first = None
      for k in n.kids:
        lm = walk(k)
        first = lm if first is None else first
      labels.append(n.label)
      leftmost.append(len(labels) - 1 if first is None else first)
      return leftmost[-1]
    walk(root)
    seen = {}
    for i, lm in enumerate(leftmost):
      seen[lm] = i  # keyroot = highest node sharing each leftmost leaf
    keyroots = sorted(seen.values())
    return labels, leftmost, keyroots

  la, lma, kra = postorder(a)
  lb, lmb, krb = postorder(b)
  td = [[0] * len(lb) for _ in la]
  for i in kra:
    for j in krb:
      li, lj = lma[i], lmb[j]
      m, n = i - li + 2, j - lj + 2
      fd = [[0] * n for _ in range(m)]
      for x in range(1, m):
        fd[x][0] = fd[x - 1][0] + len(la[li + x - 1])
      for y in range(1, n):
        fd[0][y] = fd[0][y - 1] + len(lb[lj + y - 1])
      for x in range(1, m):
        for y in range(1, n):
          ia, jb = li + x - 1, lj + y - 1
          remove = fd[x - 1][y] + len(la[ia])
          insert = fd[x][y - 1] + len(lb[jb])
          if lma[ia] == li and lmb[jb] == lj:
            fd[x][y] = min(remove, insert, fd[x - 1][y - 1] + levenshtein(la[ia], lb[jb]))
            td[ia][jb] = fd[x][y]
          else:
            fd[x][y] = min(remove, insert, fd[lma[ia] - li][lmb[jb] - lj] + td[ia][jb])
  return td[-1][-1]


def score_cc_ocr_kie(sample: Sample, output: str) -> Details:
  """cc_ocr_kie.py `score_sample`: mean of key-value F1 and normalised tree edit similarity (nTED)."""
  pred, gt = _first_json(output), _first_json(sample.get("answer") or "")
  f1 = _kie_f1(pred, gt)
  pred_tree, gt_tree = _kie_tree(_kie_norm(pred)), _kie_tree(_kie_norm(gt))
  d_pred, d_empty = tree_edit_distance(pred_tree, gt_tree), tree_edit_distance(_Tree("root"), gt_tree)
  nted = float(d_pred == 0) if d_empty == 0 else min(1.0, max(0.0, 1.0 - d_pred / d_empty))
  return {"score": (f1 + nted) / 2.0, "f1_score": f1, "nted_score": nted}


def _edit_similarity(pred: str, gt: str) -> float:
  longest = max(len(pred), len(gt))
  if longest == 0:
    return float(pred == gt)
  return max(0.0, min(1.0, 1.0 - levenshtein(pred, gt) / longest))


_DOC_PREAMBLE = (r"\\documentclass\{.*?\}", r"\\usepackage\{.*?\}", r"\\begin\{document\}", r"\\end\{document\}",
                 r"\\geometry\{.*?\}", r"\\title\{.*?\}", r"\\author\{.*?\}")


def _strip_fences(text: str) -> str:
  return re.sub(r"```\s*", "", re.sub(r"```latex\s*", "", text, flags=re.IGNORECASE))


def _table_html(text: str) -> str:
  m = re.search(r"<table>(.*?)</table>", text, re.DOTALL | re.IGNORECASE)
  if m:
    text = "<table>" + m.group(1) + "</table>"
  text = re.sub(r"<table[^>]*>", "<table>", text, flags=re.IGNORECASE)
  return _halfwidth(re.sub(r">\s+<", "><", text).replace("\n", ""))


def _teds_or_edit(pred: str, gt: str) -> tuple[float, str]:
  """TEDS (tag-tree edit distance through apted + lxml) when both are installed, else edit similarity:
  the reference makes the same choice on ImportError."""
  try:
    from apted import APTED
    from apted.helpers import Tree
    from lxml import html as lxml_html
  except ImportError:
    return _edit_similarity(pred, gt), "edit_distance_fallback"

  def to_tree(element) -> Any:
    node = Tree(element.tag)
    node.children.extend(to_tree(c) for c in element)
    return node

  def parse(s: str) -> Any:
    try:
      return to_tree(lxml_html.fromstring(s))
    except Exception:  # lxml raises several types on empty or broken markup
      return Tree("table")

  def count(t: Any) -> int:
    return 1 + sum(count(c) for c in t.children)

  pt, gt_tree = parse(pred), parse(gt)
  dist = APTED(pt, gt_tree).compute_edit_distance()
  return max(0.0, 1.0 - float(dist) / count(gt_tree)), "teds"


def score_cc_ocr_doc_parsing(sample: Sample, output: str) -> Details:
  """cc_ocr_doc_parsing.py `score_sample`: edit similarity after a per-category normaliser."""
  pred = output if isinstance(output, str) else ""
  m = re.search(r"<\|begin_of_box\|>(.*?)<\|end_of_box\|>", pred, re.DOTALL) or \
      re.search(r"\\boxed\{(.*)\}", pred, re.DOTALL)
  if m:
    pred = m.group(1)
  gt = sample.get("answer") or ""
  category = sample.get("l2_category") or "doc"
  if category == "table":
    score, method = _teds_or_edit(_table_html(pred), _table_html(gt))
    return {"score": max(0.0, min(1.0, score)), "l2_category": category, "method": method}
  if category == "formula":
    norm = lambda s: _strip_fences(s).replace("\t", "").replace("\n", "").replace(" ", "")
  elif category == "molecular":
    norm = lambda s: s.replace("<smiles>", "").replace("</smiles>", "").replace("\n", "").replace(" ", "")
  else:
    def norm(s: str) -> str:
      s = _strip_fences(s)
      for rx in _DOC_PREAMBLE:
        s = re.sub(rx, "", s)
      return s.replace(" ", "").replace("\n", "").replace("\t", "").replace("\r", "")
  return {"score": _edit_similarity(norm(pred), norm(gt)), "l2_category": category}
