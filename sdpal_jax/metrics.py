"""Forgery-localisation metrics: pooled, per-image and best-threshold protocols.

Everything here is NumPy on host memory, streaming (``update`` one probability
map at a time, ``result`` at the end) and pure apart from the accumulators'
own state. Three pixel protocols are in use in the literature; they give very
different numbers for the same predictions, so every result says which one it
is.

``dataset`` (``DatasetMetrics``) — the SDPAL release's ``main.py validate``:
  a pixel is predicted tampered iff its probability is *strictly greater* than
  0.5; TP/FP/FN are summed over every pixel of the split and precision,
  recall, F1 and IoU come from the sums; AUC is over all pixels of the split
  pooled together; ``pixel_auc_centre_controlled`` (ours, not the release's)
  pools only pairs of pixels at the same distance from their images'
  centres (``CentreControlledAUC``), so a map that only knows "the middle of
  the photo" scores about 0.5. The release's conventions for degenerate splits are kept
  (precision = 1 with no positive prediction, recall = 1 with no tampered
  pixel, F1 = 0 when both are 0, IoU = 0 with an empty union, AUC = 0.5 with
  one class only) and each also raises a ``MetricWarning``. The AUC is exact
  (identical to ``sklearn.metrics.roc_auc_score``, ties included) with memory
  that grows with the number of *distinct* float32 probabilities seen, not
  with the number of pixels (``ExactScoreTable``), or approximate with fixed
  memory (``HistogramScoreTable``, ``histogram_bins=``).

``image`` (``ImageMetrics``) — IMDL-BenCo's ``PixelF1`` / ``PixelAUC``
  (Ma et al., "IMDL-BenCo", NeurIPS 2024 Datasets & Benchmarks; package
  ``imdlbenco``, ``IMDLBenCo/evaluation/F1.py`` and ``AUC.py``): F1 at 0.5 and
  AUC computed per image, then averaged over images. IMDL-BenCo gives an image
  without any tampered pixel F1 = 0 (TP = 0) and AUC = 0 (its ``Cal_AUC``
  returns 0.0 for an all-zero mask) and still counts it in the mean; we do the
  same for ``pixel_f1`` / ``pixel_auc`` (and warn), and add
  ``pixel_f1_tampered`` / ``pixel_auc_tampered``, the means over images that
  contain both classes, which is what the benchmark's authors recommend
  reporting (they evaluate pixel metrics on tampered-only sets). IMDL-BenCo's
  AUC is NaN for an all-tampered mask; we use 0 there too and warn. Its
  per-image AUC does not merge tied scores; ours does (as scikit-learn).

``best`` (``BestThresholdMetrics``) — the "optimal threshold" protocol of
  CAT-Net / TruFor style comparisons: ``pixel_f1`` is the mean over tampered
  images of each image's F1 at its own best threshold (authentic images are
  left out: no threshold gives them a true positive), and
  ``pixel_f1_best_dataset`` is the pooled F1 at the single best threshold for
  the split (from the same count tables as the pooled AUC).
  ``pixel_auc`` is the pooled AUC (threshold-free, as in ``dataset``).

Image-level detection (in every protocol's result): each image gets one score
from its probability map by a selectable rule (``image_score_fn``): ``top1``
(default, ``detection_score``), the mean of its top 1% pixel probabilities
(the maximum alone follows a single noisy pixel); ``topP`` for another
percentage; ``max``, the largest probability (the global max pooling
MVSS-Net uses for its image label, ``IMDLBenCo/model_zoo/mvss_net/mvssnet.py``);
``mean``; and ``area``, the fraction of pixels above the threshold. An image
is called tampered iff its score is greater than the threshold (0.5 unless
set), as IMDL-BenCo's ``ImageF1`` / ``ImageAccuracy`` do
(``IMDLBenCo/evaluation/F1.py``, ``Accuracy.py``). ``image_auc`` is the ROC AUC
of the scores for tampered vs authentic images, ``image_f1`` the F1 of the
tampered class, ``image_accuracy`` the fraction of images called right and
``image_balanced_accuracy`` the mean of the two class recalls; each equals
scikit-learn's (``roc_auc_score``, ``f1_score(zero_division=0)``,
``accuracy_score``, ``balanced_accuracy_score``; tests/test_benco_compat.py).

Per image (``per_image_record``, the rows of ``evaluate``'s
``per_image.csv``): the image score, the pixel F1 / precision / recall / IoU
at the threshold (as ``image`` computes them), the AUC and the best-threshold
F1 of that one map, so that failures can be found image by image.

All metric values are fractions in [0, 1]. Every function and accumulator refuses
probabilities or scores that are not finite (``NonFiniteScoresError``): a NaN has
no place in a ranking or against a threshold, and a diverged model's maps would
otherwise come out as plausible numbers (an AUC of 0.5, an F1 of 0).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np

from sdpal_jax.errors import SdpalError

THRESHOLD = 0.5
DETECTION_TOP_FRACTION = 0.01
PROTOCOLS = ("dataset", "image", "best")


class MetricWarning(UserWarning):
  """A metric fell back to a convention because the data made it undefined."""


def _warn(message: str) -> None:
  warnings.warn(message, MetricWarning, stacklevel=3)


class NonFiniteScoresError(SdpalError):
  """Probabilities or scores that hold NaN or infinity, which no metric can rank.

  Attributes:
    num_nan / num_inf / size: NaN values, infinite values and all values of the array.
  """

  def __init__(self, what: str, num_nan: int, num_inf: int, size: int):
    self.num_nan, self.num_inf, self.size = num_nan, num_inf, size
    super().__init__(
      f"{what} not finite: {num_nan} NaN and {num_inf} infinite of {size} values; "
      "no metric is computed from them (a diverged model gives such maps)."
    )


def require_finite(scores, what: str = "probabilities") -> np.ndarray:
  """``scores`` as an array; ``NonFiniteScoresError`` saying how many values are NaN / inf."""
  scores = np.asarray(scores)
  finite = np.isfinite(scores)
  if not finite.all():
    num_nan = int(np.count_nonzero(np.isnan(scores)))
    num_inf = int(scores.size - np.count_nonzero(finite)) - num_nan
    raise NonFiniteScoresError(what, num_nan, num_inf, int(scores.size))
  return scores


# --------------------------------------------------------------------------
# Per-value count tables: the sufficient statistic for AUC, curves, best F1.
# --------------------------------------------------------------------------


def _as_scores_and_labels(probs, mask, valid) -> tuple[np.ndarray, np.ndarray]:
  """Flattens ``probs`` / ``mask`` ``[H, W]`` to 1-D, keeping pixels where ``valid``."""
  probs = np.asarray(probs, np.float32)
  mask = np.asarray(mask)
  if probs.shape != mask.shape:
    raise ValueError(f"probabilities {probs.shape} and mask {mask.shape} differ in shape.")
  return require_finite(_kept_pixels(probs, valid)), _kept_pixels(mask.astype(bool), valid)


def _kept_pixels(values: np.ndarray, valid) -> np.ndarray:
  """``values`` ``[H, W]`` flattened to the pixels where ``valid`` (True / None: all of them)."""
  if valid is True or valid is None:
    return values.reshape(-1)
  valid = np.asarray(valid, bool)
  if valid.shape == ():
    return values.reshape(-1) if valid else values[np.zeros(values.shape, bool)]
  return values[np.broadcast_to(valid, values.shape)]


def relative_distance_from_centre(height: int, width: int) -> np.ndarray:
  """float64 ``[height, width]`` in [0, 1): each pixel centre's distance from the image centre.

  Measured in coordinates relative to the height and width (so the rings of
  equal distance are ellipses of the image's aspect) and divided by the
  half-diagonal; the corners' pixel centres come closest to 1.
  """
  y = (np.arange(height, dtype=np.float64) + 0.5) / height - 0.5
  x = (np.arange(width, dtype=np.float64) + 0.5) / width - 0.5
  return np.sqrt(y[:, None] ** 2 + x[None, :] ** 2) / np.sqrt(0.5)


class CentreControlledAUC:
  """Pixel AUC over pairs of pixels at the same distance from their images' centres.

  The forgeries of the public test sets sit near the middle of the frame, so a
  map that only says "the middle" reaches a pooled AUC far above 0.5 (0.66 on
  CASIA v1.0, 0.75 on COVERAGE: ``sdpal_jax.baselines``). Here every pixel
  falls in one of ``num_rings`` rings of equal width in
  ``relative_distance_from_centre``; the AUC is computed within each ring
  (over every image of the split pooled) and the rings' AUCs are averaged
  weighted by their tampered x authentic pair counts, i.e. the pooled AUC
  restricted to pairs in the same ring. A map that depends on position alone
  scores close to 0.5; what is left is what the map knows about the content.
  Scores are counted in ``num_bins`` equal bins of [0, 1] (ties within a bin
  count one half), a fixed 2 x ``num_rings`` x ``num_bins`` int64 table.
  """

  def __init__(self, num_rings: int = 32, num_bins: int = 1 << 14):
    self.num_rings, self.num_bins = int(num_rings), int(num_bins)
    self._positives = np.zeros(self.num_rings * self.num_bins, np.int64)
    self._negatives = np.zeros(self.num_rings * self.num_bins, np.int64)

  def update(self, probs, mask, valid=True) -> None:
    """Adds one map: float ``probs`` and ``mask`` ``[H, W]``, ``valid`` as ``_Accumulator.update``."""
    scores, labels = _as_scores_and_labels(probs, mask, valid)
    ring = np.minimum(
      (relative_distance_from_centre(*np.shape(probs)) * self.num_rings).astype(np.int64),
      self.num_rings - 1,
    )
    bins = np.clip(
      (scores.astype(np.float64) * self.num_bins).astype(np.int64), 0, self.num_bins - 1
    )
    index = _kept_pixels(ring, valid) * self.num_bins + bins
    size = self.num_rings * self.num_bins
    self._positives += np.bincount(index[labels], minlength=size)
    self._negatives += np.bincount(index[~labels], minlength=size)

  def result(self) -> float:
    """The AUC (0.5 when no ring holds both tampered and authentic pixels)."""
    total, pairs = 0.0, 0.0
    positives = self._positives.reshape(self.num_rings, self.num_bins)
    negatives = self._negatives.reshape(self.num_rings, self.num_bins)
    for ring_positives, ring_negatives in zip(positives, negatives, strict=True):
      ring_pairs = float(ring_positives.sum()) * float(ring_negatives.sum())
      if ring_pairs:
        total += auc_from_counts(ring_positives, ring_negatives) * ring_pairs
        pairs += ring_pairs
    return total / pairs if pairs else 0.5


def value_counts(
  scores: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Distinct float32 ``scores`` ascending with their positive / negative pixel counts.

  One sort of the pixels; every metric of an image is then computed from
  these (much shorter) arrays.
  """
  scores = require_finite(np.asarray(scores, np.float32).reshape(-1), "scores")
  labels = np.asarray(labels, bool).reshape(-1)
  if scores.size == 0:
    return np.empty(0, np.float32), np.empty(0, np.int64), np.empty(0, np.int64)
  order = np.argsort(scores)
  sorted_scores, sorted_labels = scores[order], labels[order]
  starts = np.concatenate([[0], np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1]) + 1])
  totals = np.diff(np.append(starts, scores.size))
  positives = np.add.reduceat(sorted_labels.astype(np.int64), starts)
  return sorted_scores[starts], positives, totals - positives


class ExactScoreTable:
  """Counts of positive and negative pixels per distinct float32 score, merged as it streams.

  Memory is O(number of distinct float32 values seen) — at most 2^30 for
  values in [0, 1] and in practice far fewer — independent of the number of
  pixels. New batches are kept as small per-batch ``np.unique`` tables and
  merged into the running sorted table once their total size reaches the
  table's, so the merging cost is amortised O(n log n).
  """

  def __init__(self):
    self._values = np.empty(0, np.float32)
    self._positives = np.empty(0, np.int64)
    self._negatives = np.empty(0, np.int64)
    self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    self._pending_size = 0

  def update(self, scores: np.ndarray, labels: np.ndarray) -> None:
    """Adds 1-D float ``scores`` with boolean ``labels`` (True = tampered)."""
    self.update_counts(*value_counts(scores, labels))

  def update_counts(self, values: np.ndarray, positives: np.ndarray, negatives: np.ndarray) -> None:
    """Adds a ``value_counts`` table (distinct ascending float32 values)."""
    if values.size == 0:
      return
    self._pending.append((np.asarray(values, np.float32), positives, negatives))
    self._pending_size += values.size
    if self._pending_size >= max(self._values.size, 1 << 16):
      self._merge()

  def _merge(self) -> None:
    if not self._pending:
      return
    parts = [(self._values, self._positives, self._negatives), *self._pending]
    values = np.concatenate([p[0] for p in parts])
    unique, inverse = np.unique(values, return_inverse=True)
    self._positives = np.bincount(
      inverse, weights=np.concatenate([p[1] for p in parts]), minlength=unique.size
    ).astype(np.int64)
    self._negatives = np.bincount(
      inverse, weights=np.concatenate([p[2] for p in parts]), minlength=unique.size
    ).astype(np.int64)
    self._values = unique
    self._pending, self._pending_size = [], 0

  def counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values ascending [M] float, positives [M] int64, negatives [M] int64)."""
    self._merge()
    return self._values.astype(np.float64), self._positives, self._negatives


class HistogramScoreTable:
  """Fixed-memory approximation of ``ExactScoreTable`` for huge splits.

  Scores in [0, 1] are counted in ``num_bins`` equal-width bins (default 2^20,
  16 MiB); all scores of a bin count as one tied value (its lower edge), so the
  AUC is approximate (the error is bounded by the mass of positive/negative
  pairs that fall in a common bin) and thresholds are resolved to 1/num_bins.
  """

  def __init__(self, num_bins: int = 1 << 20):
    if num_bins < 2:
      raise ValueError(f"num_bins={num_bins}; need at least 2.")
    self.num_bins = int(num_bins)
    self._positives = np.zeros(self.num_bins, np.int64)
    self._negatives = np.zeros(self.num_bins, np.int64)

  def update(self, scores: np.ndarray, labels: np.ndarray) -> None:
    scores = require_finite(np.asarray(scores, np.float64).reshape(-1), "scores")
    labels = np.asarray(labels, bool).reshape(-1)
    bins = np.clip((scores * self.num_bins).astype(np.int64), 0, self.num_bins - 1)
    self._positives += np.bincount(bins[labels], minlength=self.num_bins)
    self._negatives += np.bincount(bins[~labels], minlength=self.num_bins)

  def update_counts(self, values: np.ndarray, positives: np.ndarray, negatives: np.ndarray) -> None:
    """Adds a ``value_counts`` table."""
    bins = np.clip(
      (require_finite(np.asarray(values, np.float64), "scores") * self.num_bins).astype(np.int64),
      0,
      self.num_bins - 1,
    )
    self._positives += np.bincount(bins, weights=positives, minlength=self.num_bins).astype(
      np.int64
    )
    self._negatives += np.bincount(bins, weights=negatives, minlength=self.num_bins).astype(
      np.int64
    )

  def counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    used = (self._positives + self._negatives) > 0
    values = np.arange(self.num_bins, dtype=np.float64)[used] / self.num_bins
    return values, self._positives[used], self._negatives[used]


def auc_from_counts(positives: np.ndarray, negatives: np.ndarray) -> float:
  """ROC AUC from per-value counts ordered by ascending score (ties count 1/2).

  The Mann-Whitney form: P(score_pos > score_neg) + 0.5 P(equal), which equals
  the trapezoidal area under the ROC curve scikit-learn computes. NaN if one
  class is absent.
  """
  positives = np.asarray(positives, np.float64)
  negatives = np.asarray(negatives, np.float64)
  total_pos, total_neg = positives.sum(), negatives.sum()
  if total_pos == 0 or total_neg == 0:
    return float("nan")
  negatives_below = np.cumsum(negatives) - negatives
  wins = np.sum(positives * negatives_below) + 0.5 * np.sum(positives * negatives)
  return float(wins / (total_pos * total_neg))


def _descending_cumulative(values, positives, negatives):
  """TP and FP when predicting ``score >= value`` for each value, highest value first."""
  order = np.argsort(values)[::-1]
  return (
    np.asarray(values)[order],
    np.cumsum(np.asarray(positives)[order]).astype(np.float64),
    np.cumsum(np.asarray(negatives)[order]).astype(np.float64),
  )


def roc_curve_from_counts(values, positives, negatives):
  """(false positive rate, true positive rate, thresholds), starting at (0, 0).

  A point per distinct value v: predict tampered iff score >= v.
  """
  thresholds, tp, fp = _descending_cumulative(values, positives, negatives)
  total_pos, total_neg = max(tp[-1] if tp.size else 0, 1), max(fp[-1] if fp.size else 0, 1)
  fpr = np.concatenate([[0.0], fp / total_neg])
  tpr = np.concatenate([[0.0], tp / total_pos])
  return fpr, tpr, np.concatenate([[np.inf], thresholds])


def precision_recall_curve_from_counts(values, positives, negatives):
  """(precision, recall, thresholds), highest threshold first (predict score >= v)."""
  thresholds, tp, fp = _descending_cumulative(values, positives, negatives)
  total_pos = max(tp[-1] if tp.size else 0, 1)
  precision = tp / np.maximum(tp + fp, 1)
  recall = tp / total_pos
  return precision, recall, thresholds


def best_f1_from_counts(values, positives, negatives) -> tuple[float, float]:
  """(best F1, its threshold v) over all rules ``score >= v``; (0, nan) without positives."""
  thresholds, tp, fp = _descending_cumulative(values, positives, negatives)
  if tp.size == 0 or tp[-1] == 0:
    return 0.0, float("nan")
  f1 = 2 * tp / (tp + fp + tp[-1])  # 2TP / (predicted positives + actual positives)
  best = int(np.argmax(f1))
  return float(f1[best]), float(thresholds[best])


# --------------------------------------------------------------------------
# Confusion-count metrics at a fixed threshold.
# --------------------------------------------------------------------------


@dataclasses.dataclass
class ConfusionCounts:
  """Pixel counts at a fixed threshold (predicted tampered iff prob > threshold)."""

  tp: int = 0
  fp: int = 0
  fn: int = 0
  tn: int = 0

  @classmethod
  def from_maps(cls, scores, labels, threshold: float = THRESHOLD) -> ConfusionCounts:
    predicted = require_finite(scores) > threshold
    labels = np.asarray(labels, bool)
    tp = int(np.count_nonzero(predicted & labels))
    fp = int(np.count_nonzero(predicted & ~labels))
    fn = int(np.count_nonzero(~predicted & labels))
    return cls(tp=tp, fp=fp, fn=fn, tn=int(labels.size) - tp - fp - fn)

  @classmethod
  def from_value_counts(cls, values, positives, negatives, threshold: float = THRESHOLD):
    """The same counts from a ``value_counts`` table."""
    above = np.asarray(values) > threshold
    tp, fp = int(positives[above].sum()), int(negatives[above].sum())
    return cls(tp=tp, fp=fp, fn=int(positives.sum()) - tp, tn=int(negatives.sum()) - fp)

  def __iadd__(self, other: ConfusionCounts) -> ConfusionCounts:
    self.tp += other.tp
    self.fp += other.fp
    self.fn += other.fn
    self.tn += other.tn
    return self


def release_scores(counts: ConfusionCounts, warn: bool = True) -> dict[str, float]:
  """Precision, recall, F1, IoU with the SDPAL release's conventions for empty sums."""
  tp, fp, fn = counts.tp, counts.fp, counts.fn
  if tp + fp == 0:
    precision = 1.0
    if warn:
      _warn("no pixel was predicted tampered: precision set to 1 (SDPAL release convention).")
  else:
    precision = tp / (tp + fp)
  if tp + fn == 0:
    recall = 1.0
    if warn:
      _warn("no pixel is tampered in the ground truth: recall set to 1 (SDPAL release convention).")
  else:
    recall = tp / (tp + fn)
  f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
  union = tp + fp + fn
  iou = 0.0 if union == 0 else tp / union
  return {"pixel_precision": precision, "pixel_recall": recall, "pixel_f1": f1, "pixel_iou": iou}


def f1_score_exact(counts: ConfusionCounts) -> float:
  """2TP / (2TP + FP + FN), 0 when that is 0/0 (scikit-learn's ``zero_division=0``)."""
  denominator = 2 * counts.tp + counts.fp + counts.fn
  return 0.0 if denominator == 0 else 2 * counts.tp / denominator


def single_map_auc(scores: np.ndarray, labels: np.ndarray) -> float:
  """Exact ROC AUC of one map (ties count 1/2); NaN if it has one class only."""
  _, positives, negatives = value_counts(scores, labels)
  return auc_from_counts(positives, negatives)


def single_map_best_f1(scores: np.ndarray, labels: np.ndarray) -> float:
  """Best F1 of one map over all thresholds ``score >= v``; 0 with no tampered pixel."""
  return best_f1_from_counts(*value_counts(scores, labels))[0]


# --------------------------------------------------------------------------
# Image-level detection.
# --------------------------------------------------------------------------


def detection_score(probs: np.ndarray, top_fraction: float = DETECTION_TOP_FRACTION) -> float:
  """Image-level tampering score of an ``[H, W]`` map: mean of its top ``top_fraction`` pixels."""
  flat = require_finite(np.asarray(probs, np.float32).reshape(-1))
  k = max(1, int(round(flat.size * top_fraction)))
  return float(np.mean(np.partition(flat, flat.size - k)[flat.size - k :]))


DEFAULT_IMAGE_SCORE = "top1"
IMAGE_SCORE_RULES = ("top1", "topP (P percent, e.g. top5, top0.1)", "max", "mean", "area")


def image_score_fn(rule: str = DEFAULT_IMAGE_SCORE, threshold: float = THRESHOLD):
  """The image-level score rule ``rule`` as ``probabilities (any shape) -> float``.

  ``topP``: mean of the top P percent of the pixels (``top1`` is
  ``detection_score``); ``max``; ``mean``; ``area``: fraction of pixels whose
  probability is greater than ``threshold``. An empty map scores 0.
  """
  rule = str(rule).strip().lower()
  if rule == "max":
    fn = np.max
  elif rule == "mean":
    fn = np.mean
  elif rule == "area":

    def fn(flat):
      return np.mean(flat > threshold)

  elif rule.startswith("top"):
    try:
      percent = float(rule[3:])
    except ValueError:
      percent = float("nan")
    if not 0 < percent <= 100:
      raise ValueError(
        f"image score {rule!r}: expected one of {', '.join(IMAGE_SCORE_RULES)}; topP needs "
        "0 < P <= 100."
      )

    def fn(flat):
      return detection_score(flat, percent / 100)

  else:
    raise ValueError(f"image score {rule!r}: expected one of {', '.join(IMAGE_SCORE_RULES)}.")

  def score(probs) -> float:
    flat = require_finite(np.asarray(probs, np.float32).reshape(-1))
    return float(fn(flat)) if flat.size else 0.0

  score.rule = rule
  return score


def per_image_record(
  probs: np.ndarray,
  mask: np.ndarray,
  *,
  threshold: float = THRESHOLD,
  image_score: str = DEFAULT_IMAGE_SCORE,
) -> dict[str, float]:
  """One image's numbers (a row of ``per_image.csv``); NaN where a number is undefined.

  ``pixel_f1`` / ``pixel_precision`` / ``pixel_recall`` / ``pixel_iou`` are
  those the ``image`` protocol averages (0 for an empty denominator, as
  scikit-learn's ``zero_division=0``); ``pixel_auc`` and ``pixel_best_f1`` are
  NaN for a map with one class only (e.g. an authentic image).
  """
  scores, labels = _as_scores_and_labels(probs, mask, True)
  values, positives, negatives = value_counts(scores, labels)
  c = ConfusionCounts.from_value_counts(values, positives, negatives, threshold)
  has_positive = bool(c.tp + c.fn)
  return {
    "image_score": image_score_fn(image_score, threshold)(scores),
    "pixel_f1": f1_score_exact(c),
    "pixel_precision": c.tp / (c.tp + c.fp) if c.tp + c.fp else 0.0,
    "pixel_recall": c.tp / (c.tp + c.fn) if has_positive else 0.0,
    "pixel_iou": c.tp / (c.tp + c.fp + c.fn) if c.tp + c.fp + c.fn else 0.0,
    "pixel_auc": auc_from_counts(positives, negatives),
    "pixel_best_f1": (
      best_f1_from_counts(values, positives, negatives)[0] if has_positive else float("nan")
    ),
    "true_fraction": (c.tp + c.fn) / max(labels.size, 1),
    "predicted_fraction": (c.tp + c.fp) / max(labels.size, 1),
  }


def balanced_accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
  """Mean recall over the classes present in ``labels`` (as scikit-learn's)."""
  predicted = np.asarray(predicted, bool)
  labels = np.asarray(labels, bool)
  recalls = [
    float(np.mean(predicted[labels == cls] == cls))
    for cls in (False, True)
    if np.any(labels == cls)
  ]
  return float(np.mean(recalls)) if recalls else float("nan")


class DetectionMetrics:
  """Image-level tampered-vs-authentic detection from per-image scores (score > threshold)."""

  def __init__(self, threshold: float = THRESHOLD):
    self.threshold = threshold
    self.scores: list[float] = []
    self.labels: list[bool] = []

  def update(self, score: float, tampered: bool) -> None:
    self.scores.append(float(require_finite(float(score), "image score")))
    self.labels.append(bool(tampered))

  def result(self) -> dict[str, Any]:
    scores = np.asarray(self.scores, np.float32)
    labels = np.asarray(self.labels, bool)
    num_tampered = int(labels.sum())
    auc = single_map_auc(scores, labels) if scores.size else float("nan")
    if np.isnan(auc):
      auc = 0.5
      if scores.size:
        _warn(
          "image-level AUC needs tampered and authentic images; got "
          f"{num_tampered} tampered of {labels.size}: image_auc set to 0.5."
        )
    predicted = scores > self.threshold
    tp = int(np.count_nonzero(predicted & labels))
    fp = int(np.count_nonzero(predicted & ~labels))
    fn = num_tampered - tp
    return {
      "image_auc": auc,
      "image_f1": f1_score_exact(ConfusionCounts(tp=tp, fp=fp, fn=fn)),
      "image_precision": tp / (tp + fp) if tp + fp else 0.0,
      "image_recall": tp / num_tampered if num_tampered else 0.0,
      "image_accuracy": float(np.mean(predicted == labels)) if labels.size else float("nan"),
      "image_balanced_accuracy": balanced_accuracy(predicted, labels),
      "num_images": int(labels.size),
      "num_tampered_images": num_tampered,
    }


# --------------------------------------------------------------------------
# Protocol accumulators.
# --------------------------------------------------------------------------


class _Accumulator:
  """Shared image-level bookkeeping; subclasses add the pixel protocol."""

  protocol = ""

  def __init__(
    self,
    threshold: float = THRESHOLD,
    histogram_bins: int | None = None,
    image_score: str = DEFAULT_IMAGE_SCORE,
  ):
    self.threshold = threshold
    self.image_score = image_score_fn(image_score, threshold)
    self.detection = DetectionMetrics(threshold)
    self.table = (
      ExactScoreTable() if histogram_bins is None else HistogramScoreTable(histogram_bins)
    )
    self.auc_method = "exact" if histogram_bins is None else f"histogram{int(histogram_bins)}"

  def update(self, probs, mask, valid=True, tampered: bool | None = None) -> None:
    """Adds one image.

    Args:
      probs: float ``[H, W]`` tampering probabilities in [0, 1].
      mask: ``[H, W]`` ground truth, nonzero = tampered.
      valid: True (every pixel counts), or a bool ``[H, W]`` map of the pixels
        that count (e.g. not padding).
      tampered: the image-level label; defaults to "the mask has a tampered pixel".
    """
    scores, labels = _as_scores_and_labels(probs, mask, valid)
    if tampered is None:
      tampered = bool(labels.any())
    self.detection.update(self.image_score(scores), tampered)
    self._update_pixels(scores, labels)

  def _update_pixels(self, scores, labels) -> None:
    raise NotImplementedError

  def counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled per-value counts (for ROC / PR curves)."""
    return self.table.counts()

  def _pooled_auc(self) -> float:
    values, positives, negatives = self.table.counts()
    auc = auc_from_counts(positives, negatives)
    if np.isnan(auc):
      _warn(
        f"the split has {int(positives.sum())} tampered and {int(negatives.sum())} authentic "
        "pixels; pooled AUC needs both: pixel_auc set to 0.5 (SDPAL release convention)."
      )
      return 0.5
    return auc

  def result(self) -> dict[str, Any]:
    return {
      "protocol": self.protocol,
      **self._pixel_result(),
      **self.detection.result(),
      "threshold": self.threshold,
      "image_score": self.image_score.rule,
    }

  def _pixel_result(self) -> dict[str, Any]:
    raise NotImplementedError


class DatasetMetrics(_Accumulator):
  """The SDPAL release's pooled protocol (see the module docstring)."""

  protocol = "dataset"

  def __init__(self, threshold: float = THRESHOLD, histogram_bins: int | None = None, **kwargs):
    super().__init__(threshold, histogram_bins, **kwargs)
    self.confusion = ConfusionCounts()
    self.centre_controlled = CentreControlledAUC()

  def update(self, probs, mask, valid=True, tampered: bool | None = None) -> None:
    super().update(probs, mask, valid, tampered)
    self.centre_controlled.update(probs, mask, valid)

  def _update_pixels(self, scores, labels) -> None:
    if isinstance(self.table, HistogramScoreTable):  # no sort needed
      self.confusion += ConfusionCounts.from_maps(scores, labels, self.threshold)
      self.table.update(scores, labels)
      return
    values, positives, negatives = value_counts(scores, labels)
    self.confusion += ConfusionCounts.from_value_counts(
      values, positives, negatives, self.threshold
    )
    self.table.update_counts(values, positives, negatives)

  def _pixel_result(self) -> dict[str, Any]:
    c = self.confusion
    return {
      **release_scores(c),
      "pixel_auc": self._pooled_auc(),
      "pixel_auc_centre_controlled": self.centre_controlled.result(),
      "auc_method": self.auc_method,
      "num_pixels": c.tp + c.fp + c.fn + c.tn,
      "num_tampered_pixels": c.tp + c.fn,
    }


class ImageMetrics(_Accumulator):
  """IMDL-BenCo's per-image protocol (see the module docstring)."""

  protocol = "image"

  def __init__(self, threshold: float = THRESHOLD, histogram_bins: int | None = None, **kwargs):
    super().__init__(threshold, histogram_bins, **kwargs)
    self.f1: list[float] = []
    self.auc: list[float] = []
    self.precision: list[float] = []
    self.recall: list[float] = []
    self.iou: list[float] = []
    self.two_class: list[bool] = []

  def _update_pixels(self, scores, labels) -> None:
    values, positives, negatives = value_counts(scores, labels)
    c = ConfusionCounts.from_value_counts(values, positives, negatives, self.threshold)
    self.f1.append(f1_score_exact(c))
    self.precision.append(c.tp / (c.tp + c.fp) if c.tp + c.fp else 0.0)
    self.recall.append(c.tp / (c.tp + c.fn) if c.tp + c.fn else 0.0)
    self.iou.append(c.tp / (c.tp + c.fp + c.fn) if c.tp + c.fp + c.fn else 0.0)
    auc = auc_from_counts(positives, negatives)
    self.two_class.append(not np.isnan(auc))
    self.auc.append(0.0 if np.isnan(auc) else auc)

  def _pixel_result(self) -> dict[str, Any]:
    two_class = np.asarray(self.two_class, bool)
    num_one_class = int((~two_class).sum())
    if num_one_class:
      _warn(
        f"{num_one_class} of {two_class.size} images have one class only (e.g. authentic); "
        "as IMDL-BenCo they count with F1 = 0 and AUC = 0 in pixel_f1 / pixel_auc "
        "(pixel_f1_tampered / pixel_auc_tampered leave them out)."
      )

    def mean(values, where=None):
      values = np.asarray(values, np.float64)
      if where is not None:
        values = values[where]
      return float(values.mean()) if values.size else float("nan")

    return {
      "pixel_f1": mean(self.f1),
      "pixel_auc": mean(self.auc),
      "pixel_precision": mean(self.precision),
      "pixel_recall": mean(self.recall),
      "pixel_iou": mean(self.iou),
      "pixel_f1_tampered": mean(self.f1, two_class),
      "pixel_auc_tampered": mean(self.auc, two_class),
      "num_one_class_images": num_one_class,
    }


class BestThresholdMetrics(_Accumulator):
  """Best-threshold protocol (see the module docstring)."""

  protocol = "best"

  def __init__(self, threshold: float = THRESHOLD, histogram_bins: int | None = None, **kwargs):
    super().__init__(threshold, histogram_bins, **kwargs)
    self.best_f1: list[float] = []

  def _update_pixels(self, scores, labels) -> None:
    values, positives, negatives = value_counts(scores, labels)
    self.table.update_counts(values, positives, negatives)
    if positives.any():
      self.best_f1.append(best_f1_from_counts(values, positives, negatives)[0])

  def _pixel_result(self) -> dict[str, Any]:
    values, positives, negatives = self.table.counts()
    dataset_f1, dataset_threshold = best_f1_from_counts(values, positives, negatives)
    if not self.best_f1:
      _warn("no image has a tampered pixel: per-image best F1 is undefined (set to 0).")
    return {
      "pixel_f1": float(np.mean(self.best_f1)) if self.best_f1 else 0.0,
      "pixel_auc": self._pooled_auc(),
      "pixel_f1_best_dataset": dataset_f1,
      "best_threshold_dataset": dataset_threshold,
      "auc_method": self.auc_method,
      "num_tampered_images_scored": len(self.best_f1),
    }


_ACCUMULATORS = {"dataset": DatasetMetrics, "image": ImageMetrics, "best": BestThresholdMetrics}


def make_accumulator(protocol: str, **kwargs) -> _Accumulator:
  """``DatasetMetrics`` / ``ImageMetrics`` / ``BestThresholdMetrics`` by name."""
  if protocol not in _ACCUMULATORS:
    raise ValueError(f"protocol={protocol!r}; expected one of {sorted(_ACCUMULATORS)}.")
  return _ACCUMULATORS[protocol](**kwargs)
