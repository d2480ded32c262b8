"""Evaluation figures: pooled ROC / precision-recall curves and a qualitative grid.

Curves come from the per-value count tables of ``sdpal_jax.metrics`` (every
pixel of the split, no subsampling). Everything renders with matplotlib's Agg
backend, so no display is needed. matplotlib is imported by the plotting
functions, not with the module: ``overlay`` (the red tint that ``predict``
writes and the grid shows) needs only NumPy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from sdpal_jax import metrics

_MAX_CURVE_POINTS = 2000  # enough for a smooth line; keeps the PNG fast with 10^6 distinct values


def _pyplot():
  """matplotlib.pyplot on the Agg backend, imported on first use."""
  import matplotlib  # noqa: PLC0415 (only when a figure is drawn: predict and evaluate start without it)

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415 (after choosing the Agg backend)

  return plt


def _thin(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
  n = arrays[0].size
  if n <= _MAX_CURVE_POINTS:
    return arrays
  keep = np.unique(np.linspace(0, n - 1, _MAX_CURVE_POINTS).astype(np.int64))
  return tuple(a[keep] for a in arrays)


def plot_curves(
  counts_by_label: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
  roc_path: str,
  pr_path: str,
  title: str = "",
) -> None:
  """Writes a ROC and a PR plot (PNG), one line per label (e.g. per checkpoint).

  Args:
    counts_by_label: ``{label: (values, positives, negatives)}`` as returned by
      ``ExactScoreTable.counts()`` / an accumulator's ``counts()``.
    roc_path / pr_path: output PNG files.
  """
  plt = _pyplot()
  fig_roc, ax_roc = plt.subplots(figsize=(4.5, 4.5))
  fig_pr, ax_pr = plt.subplots(figsize=(4.5, 4.5))
  for label, (values, positives, negatives) in counts_by_label.items():
    auc = metrics.auc_from_counts(positives, negatives)
    fpr, tpr, _ = metrics.roc_curve_from_counts(values, positives, negatives)
    fpr, tpr = _thin(fpr, tpr)
    ax_roc.plot(fpr, tpr, label=f"{label} (AUC {100 * auc:.2f})")
    precision, recall, _ = metrics.precision_recall_curve_from_counts(values, positives, negatives)
    precision, recall = _thin(precision, recall)
    best_f1, _ = metrics.best_f1_from_counts(values, positives, negatives)
    ax_pr.plot(recall, precision, label=f"{label} (best F1 {100 * best_f1:.2f})")
  ax_roc.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=0.8)
  ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC {title}")
  ax_pr.set(xlabel="recall", ylabel="precision", title=f"Precision-recall {title}")
  for fig, ax, path in ((fig_roc, ax_roc, roc_path), (fig_pr, ax_pr, pr_path)):
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right" if ax is ax_roc else "lower left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def overlay(image: np.ndarray, probs: np.ndarray, alpha: float = 0.5) -> np.ndarray:
  """uint8 ``[H, W, 3]`` photo tinted red in proportion to ``probs`` ``[H, W]`` (clipped to [0, 1]).

  Each pixel moves ``alpha * p`` of the way to pure red (255, 0, 0). The one
  overlay of the project: ``predict``'s ``STEM_overlay.png`` and the last
  column of ``plot_qualitative_grid``.
  """
  red = np.zeros_like(image, dtype=np.float32)
  red[..., 0] = 255.0
  weight = alpha * np.clip(probs, 0, 1)[..., None]
  return np.clip(image * (1 - weight) + red * weight, 0, 255).astype(np.uint8)


def plot_qualitative_grid(
  examples: Sequence[Mapping[str, np.ndarray]], path: str, title: str = ""
) -> None:
  """One row per example: image | ground truth | probability | overlay (PNG).

  Each example has ``image`` uint8 ``[H, W, 3]``, ``mask`` ``[H, W]`` {0,1},
  ``probs`` float ``[H, W]`` and optionally ``name``.
  """
  plt = _pyplot()
  rows = max(1, len(examples))
  fig, axes = plt.subplots(rows, 4, figsize=(10, 2.6 * rows), squeeze=False)
  for ax, heading in zip(axes[0], ("image", "ground truth", "probability", "overlay"), strict=True):
    ax.set_title(heading, fontsize=9)
  for row, example in zip(axes, examples, strict=False):
    row[0].imshow(example["image"])
    row[0].set_ylabel(str(example.get("name", ""))[-28:], fontsize=7)
    row[1].imshow(example["mask"], cmap="gray", vmin=0, vmax=1)
    row[2].imshow(example["probs"], cmap="magma", vmin=0, vmax=1)
    row[3].imshow(overlay(example["image"], example["probs"]))
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
