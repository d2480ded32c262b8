"""Result tables: rows = checkpoints, columns = datasets x metrics (AUC, F1).

Tables show percentages with two decimals, as in the SDPAL paper; within each
column the best value is bold and, with three rows or more, the second best
underlined (Markdown ``**x**`` / ``<u>x</u>``, LaTeX ``\\textbf`` /
``\\underline``). A missing value prints as ``-``. JSON keeps fractions in
[0, 1] (NaN becomes ``null``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from sdpal_jax.errors import ConfigError

DEFAULT_METRICS = (("pixel_auc", "AUC"), ("pixel_f1", "F1"))


def unique_names(names: Sequence[str]) -> list[str]:
  """``names`` with ``_2``, ``_3``... appended to repeats so that no two are equal.

  The first occurrence keeps its name, the n-th repeat becomes ``NAME_n``, and
  a suffix that would collide with a name already given is counted past:
  ``["a", "a", "a_2"] -> ["a", "a_2", "a_2_2"]``. Used for output file stems
  (``predict``) and table row labels (``evaluate``).
  """
  counts: dict[str, int] = {}
  taken: set[str] = set()
  unique = []
  for name in names:
    n = counts.get(name, 0) + 1
    candidate = name if n == 1 else f"{name}_{n}"
    while candidate in taken:
      n += 1
      candidate = f"{name}_{n}"
    counts[name] = n
    taken.add(candidate)
    unique.append(candidate)
  return unique


def dataset_label(spec: str) -> str:
  """A short column name for a dataset SPEC: a file's stem, a folder's name, a tfds name as is."""
  if os.sep in spec or spec.endswith((".lst", ".json", ".txt")):
    base = os.path.basename(os.path.normpath(spec))
    return os.path.splitext(base)[0] or spec
  return spec


@dataclasses.dataclass
class Table:
  """Rows of fractions; ``columns`` are (dataset label, metric title) pairs."""

  row_labels: list[str]
  columns: list[tuple[str, str]]
  values: list[list[float | None]]  # [row][column], fractions or None
  corner: str = "Model"


def build_table(
  results: Mapping[str, Mapping[str, Mapping[str, Any]]],
  specs: Sequence[str] | None = None,
  metrics: Sequence[tuple[str, str]] = DEFAULT_METRICS,
  corner: str = "Model",
) -> Table:
  """``{row label: {spec: metrics dict}}`` -> ``Table`` (spec order from ``specs`` or first row)."""
  if specs is None:
    specs = []
    for per_spec in results.values():
      specs += [s for s in per_spec if s not in specs]
  columns = [(_column_label(results, spec), title) for spec in specs for _, title in metrics]
  values = []
  for per_spec in results.values():
    row = []
    for spec in specs:
      for key, _ in metrics:
        value = per_spec.get(spec, {}).get(key)
        row.append(None if value is None or _is_nan(value) else float(value))
    values.append(row)
  return Table(list(results), columns, values, corner)


def _column_label(results, spec: str) -> str:
  """The dataset's label, with ``(scored/total scored)`` when some row skipped images."""
  counts = {
    (int(m.get("num_scored", 0)), int(m.get("num_skipped", 0)))
    for per_spec in results.values()
    if (m := per_spec.get(spec)) and m.get("num_skipped")
  }
  if not counts:
    return dataset_label(spec)
  notes = ", ".join(f"{scored}/{scored + skipped}" for scored, skipped in sorted(counts))
  return f"{dataset_label(spec)} ({notes} scored)"


def _is_nan(value) -> bool:
  return isinstance(value, float) and math.isnan(value)


def _ranks(table: Table) -> list[list[int]]:
  """0 = best, 1 = second best (only with >= 3 rows), -1 otherwise; higher is better."""
  ranks = [[-1] * len(table.columns) for _ in table.row_labels]
  if len(table.row_labels) < 2:
    return ranks
  for col in range(len(table.columns)):
    present = sorted(
      {round(100 * row[col], 2) for row in table.values if row[col] is not None}, reverse=True
    )
    marks = present[: 2 if len(table.row_labels) >= 3 else 1]
    for r, row in enumerate(table.values):
      if row[col] is not None and round(100 * row[col], 2) in marks:
        ranks[r][col] = marks.index(round(100 * row[col], 2))
  return ranks


def _percent(value: float | None) -> str:
  return "-" if value is None else f"{100 * value:.2f}"


def to_markdown(table: Table) -> str:
  """GitHub Markdown; columns titled ``DATASET METRIC``."""
  header = [table.corner] + [f"{d} {m}" for d, m in table.columns]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for label, row, ranks in zip(table.row_labels, table.values, _ranks(table), strict=True):
    cells = []
    for value, rank in zip(row, ranks, strict=True):
      text = _percent(value)
      cells.append(f"**{text}**" if rank == 0 else f"<u>{text}</u>" if rank == 1 else text)
    lines.append("| " + " | ".join([label, *cells]) + " |")
  return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
  """Plain CSV, percentages with two decimals, no emphasis."""
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow([table.corner] + [f"{d} {m}" for d, m in table.columns])
  for label, row in zip(table.row_labels, table.values, strict=True):
    writer.writerow([label] + [_percent(v) for v in row])
  return out.getvalue()


_LATEX_SPECIALS = {c: "\\" + c for c in "&%$#_{}"}


def _latex_escape(text: str) -> str:
  return "".join(_LATEX_SPECIALS.get(c, c) for c in text)


def to_latex(table: Table) -> str:
  """A ``tabular`` with one multicolumn header per dataset (booktabs rules)."""
  datasets: list[tuple[str, int]] = []
  for dataset, _ in table.columns:
    if datasets and datasets[-1][0] == dataset:
      datasets[-1] = (dataset, datasets[-1][1] + 1)
    else:
      datasets.append((dataset, 1))
  lines = [
    "\\begin{tabular}{l" + "c" * len(table.columns) + "}",
    "\\toprule",
    " & ".join(
      [_latex_escape(table.corner)]
      + [f"\\multicolumn{{{n}}}{{c}}{{{_latex_escape(d)}}}" for d, n in datasets]
    )
    + " \\\\",
    " & ".join([""] + [_latex_escape(m) for _, m in table.columns]) + " \\\\",
    "\\midrule",
  ]
  for label, row, ranks in zip(table.row_labels, table.values, _ranks(table), strict=True):
    cells = []
    for value, rank in zip(row, ranks, strict=True):
      text = _percent(value)
      cells.append(
        f"\\textbf{{{text}}}" if rank == 0 else f"\\underline{{{text}}}" if rank == 1 else text
      )
    lines.append(" & ".join([_latex_escape(label), *cells]) + " \\\\")
  lines += ["\\bottomrule", "\\end{tabular}"]
  return "\n".join(lines) + "\n"


def json_safe(value: Any) -> Any:
  """Replaces NaN/inf by None and NumPy scalars by Python numbers, recursively."""
  if isinstance(value, Mapping):
    return {str(k): json_safe(v) for k, v in value.items()}
  if isinstance(value, list | tuple):
    return [json_safe(v) for v in value]
  if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def write_json(path: str, value: Any) -> None:
  with open(path, "w") as f:
    json.dump(json_safe(value), f, indent=2, sort_keys=False, allow_nan=False)
    f.write("\n")


def write_tables(table: Table, output_dir: str, name: str) -> dict[str, str]:
  """Writes ``name.md``, ``name.csv``, ``name.tex`` into ``output_dir``; returns their paths."""
  os.makedirs(output_dir, exist_ok=True)
  paths = {}
  for suffix, render in (("md", to_markdown), ("csv", to_csv), ("tex", to_latex)):
    path = os.path.join(output_dir, f"{name}.{suffix}")
    with open(path, "w") as f:
      f.write(render(table))
    paths[suffix] = path
  return paths


# Columns of ``evaluate``'s per_image.csv (``sdpal_jax.metrics.per_image_record``).
PER_IMAGE_COLUMNS = (
  "model",
  "dataset",
  "perturbation",
  "name",
  "tampered",
  "image_score",
  "image_prediction",
  "pixel_f1",
  "pixel_precision",
  "pixel_recall",
  "pixel_iou",
  "pixel_auc",
  "pixel_best_f1",
  "true_fraction",
  "predicted_fraction",
  "height",
  "width",
)


def _csv_cell(value: Any) -> str:
  if value is None or _is_nan(value):
    return ""
  if isinstance(value, bool):
    return str(int(value))
  if isinstance(value, float):
    return f"{value:.6f}"
  return str(value)


def write_per_image_csv(path: str, rows: Sequence[Mapping[str, Any]]) -> None:
  """One row per scored image, ``PER_IMAGE_COLUMNS`` in order.

  Fractions keep 6 decimals (not percent), booleans are 0/1, and a number that
  is undefined for the image (the AUC of an authentic image's map) is empty.
  """
  with open(path, "w", newline="") as f:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(PER_IMAGE_COLUMNS)
    for row in rows:
      writer.writerow([_csv_cell(row.get(column)) for column in PER_IMAGE_COLUMNS])


def check_output_dir(path: str, flag: str = "--output_dir") -> None:
  """A one-line ``ConfigError`` when ``path``, or a folder above it, is an existing file."""
  parent = path
  while parent and not os.path.exists(parent):
    parent = os.path.dirname(parent.rstrip(os.sep))
  if parent and not os.path.isdir(parent):
    where = f"{flag}={path}" if parent == path else f"{flag}={path}: {parent}"
    raise ConfigError(f"{where} is a file, not a folder; name a folder.")


def make_output_dir(path: str, flag: str = "--output_dir") -> None:
  """Creates the folder ``path``; a one-line ``ConfigError`` when that is not possible."""
  check_output_dir(path, flag)
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"{flag}={path}: cannot create the folder ({e.strerror or e}).") from None
