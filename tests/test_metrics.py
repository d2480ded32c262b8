"""Metrics against scikit-learn on random maps, streaming vs exact, degenerate splits."""

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from sdpal_jax import metrics


def _random_split(seed, num_images=5, size=(24, 20), quantise=None, authentic=()):
  """Probability maps correlated with random rectangular masks; optional coarse values for ties."""
  rng = np.random.default_rng(seed)
  probs, masks = [], []
  for i in range(num_images):
    mask = np.zeros(size, np.uint8)
    if i not in authentic:
      top, left = rng.integers(0, size[0] // 2), rng.integers(0, size[1] // 2)
      mask[
        top : top + rng.integers(3, size[0] // 2), left : left + rng.integers(3, size[1] // 2)
      ] = 1
    prob = np.clip(0.35 * mask + rng.random(size) * 0.8, 0, 1).astype(np.float32)
    if quantise:
      prob = (np.round(prob * quantise) / quantise).astype(np.float32)
    probs.append(prob)
    masks.append(mask)
  return probs, masks


def _pooled(probs, masks):
  return np.concatenate([p.ravel() for p in probs]), np.concatenate([m.ravel() for m in masks])


def test_dataset_protocol_matches_sklearn_on_pooled_pixels():
  probs, masks = _random_split(0)
  acc = metrics.DatasetMetrics()
  for prob, mask in zip(probs, masks, strict=True):
    acc.update(prob, mask)
  result = acc.result()
  scores, labels = _pooled(probs, masks)
  predicted = scores > 0.5
  assert result["pixel_f1"] == pytest.approx(skm.f1_score(labels, predicted), abs=1e-6)
  assert result["pixel_precision"] == pytest.approx(
    skm.precision_score(labels, predicted), abs=1e-6
  )
  assert result["pixel_recall"] == pytest.approx(skm.recall_score(labels, predicted), abs=1e-6)
  assert result["pixel_iou"] == pytest.approx(skm.jaccard_score(labels, predicted), abs=1e-6)
  assert result["pixel_auc"] == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-6)
  assert result["num_pixels"] == labels.size
  assert result["num_tampered_pixels"] == labels.sum()


def test_threshold_is_strict_as_in_the_release():
  prob = np.full((4, 4), 0.5, np.float32)
  mask = np.ones((4, 4), np.uint8)
  counts = metrics.ConfusionCounts.from_maps(prob, mask)
  assert (counts.tp, counts.fn) == (0, 16)


def test_streaming_auc_is_exact_with_ties_across_many_batches():
  # 11 distinct values -> massive ties; many small batches force repeated merges.
  probs, masks = _random_split(1, num_images=40, size=(16, 16), quantise=10)
  table = metrics.ExactScoreTable()
  for prob, mask in zip(probs, masks, strict=True):
    table.update(prob.ravel(), mask.ravel().astype(bool))
  values, positives, negatives = table.counts()
  scores, labels = _pooled(probs, masks)
  assert values.size == np.unique(scores).size
  assert positives.sum() == labels.sum() and negatives.sum() == labels.size - labels.sum()
  expected = skm.roc_auc_score(labels, scores)
  assert metrics.auc_from_counts(positives, negatives) == pytest.approx(expected, abs=1e-6)


def test_streaming_table_merges_pending_batches_once_they_outgrow_the_table():
  rng = np.random.default_rng(2)
  table = metrics.ExactScoreTable()
  scores = [rng.random(70_000).astype(np.float32) for _ in range(3)]
  labels = [rng.random(70_000) < 0.3 for _ in range(3)]
  for s, lab in zip(scores, labels, strict=True):
    table.update(s, lab)
  all_scores, all_labels = np.concatenate(scores), np.concatenate(labels)
  _, positives, negatives = table.counts()
  assert metrics.auc_from_counts(positives, negatives) == pytest.approx(
    skm.roc_auc_score(all_labels, all_scores), abs=1e-6
  )


def test_histogram_auc_is_close_to_exact():
  probs, masks = _random_split(3)
  scores, labels = _pooled(probs, masks)
  table = metrics.HistogramScoreTable(1 << 12)
  table.update(scores, labels.astype(bool))
  _, positives, negatives = table.counts()
  assert metrics.auc_from_counts(positives, negatives) == pytest.approx(
    skm.roc_auc_score(labels, scores), abs=2e-3
  )


def test_image_protocol_averages_per_image_sklearn_scores_and_zeroes_authentic_images():
  probs, masks = _random_split(4, num_images=6, authentic=(2,))
  acc = metrics.ImageMetrics()
  for prob, mask in zip(probs, masks, strict=True):
    acc.update(prob, mask)
  with pytest.warns(metrics.MetricWarning, match="one class only"):
    result = acc.result()
  f1s = [
    skm.f1_score(m.ravel(), p.ravel() > 0.5, zero_division=0)
    for p, m in zip(probs, masks, strict=True)
  ]
  aucs = [
    skm.roc_auc_score(m.ravel(), p.ravel()) if m.any() else 0.0
    for p, m in zip(probs, masks, strict=True)
  ]
  assert f1s[2] == 0.0
  assert result["pixel_f1"] == pytest.approx(np.mean(f1s), abs=1e-6)
  assert result["pixel_auc"] == pytest.approx(np.mean(aucs), abs=1e-6)
  tampered = [i for i in range(6) if i != 2]
  assert result["pixel_f1_tampered"] == pytest.approx(np.mean([f1s[i] for i in tampered]), abs=1e-6)
  assert result["pixel_auc_tampered"] == pytest.approx(
    np.mean([aucs[i] for i in tampered]), abs=1e-6
  )
  assert result["num_one_class_images"] == 1


def _sklearn_best_f1(labels, scores):
  precision, recall, _ = skm.precision_recall_curve(labels, scores)
  f1 = np.divide(
    2 * precision * recall,
    precision + recall,
    out=np.zeros_like(precision),
    where=(precision + recall) > 0,
  )
  return f1.max()


def test_best_protocol_matches_sklearn_precision_recall_curve():
  probs, masks = _random_split(5, num_images=5, authentic=(0,), quantise=50)
  acc = metrics.BestThresholdMetrics()
  for prob, mask in zip(probs, masks, strict=True):
    acc.update(prob, mask)
  result = acc.result()
  per_image = [
    _sklearn_best_f1(m.ravel(), p.ravel()) for p, m in zip(probs, masks, strict=True) if m.any()
  ]
  assert result["pixel_f1"] == pytest.approx(np.mean(per_image), abs=1e-6)
  scores, labels = _pooled(probs, masks)
  assert result["pixel_f1_best_dataset"] == pytest.approx(
    _sklearn_best_f1(labels, scores), abs=1e-6
  )
  assert result["pixel_auc"] == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-6)
  threshold = result["best_threshold_dataset"]
  assert skm.f1_score(labels, scores >= threshold) == pytest.approx(
    result["pixel_f1_best_dataset"], abs=1e-6
  )


def test_detection_scores_match_sklearn_auc_and_balanced_accuracy():
  probs, masks = _random_split(6, num_images=8, authentic=(0, 3, 5))
  acc = metrics.DatasetMetrics()
  for prob, mask in zip(probs, masks, strict=True):
    acc.update(prob, mask)
  result = acc.result()
  scores = np.array([metrics.detection_score(p) for p in probs])
  labels = np.array([m.any() for m in masks])
  assert result["image_auc"] == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-6)
  assert result["image_balanced_accuracy"] == pytest.approx(
    skm.balanced_accuracy_score(labels, scores > 0.5), abs=1e-6
  )
  assert (result["num_images"], result["num_tampered_images"]) == (8, 5)


def test_detection_score_is_mean_of_top_percent():
  prob = np.zeros((10, 20), np.float32)
  prob[0, :2] = 1.0  # 2 pixels = top 1% of 200
  assert metrics.detection_score(prob) == pytest.approx(1.0)


def test_split_without_tampered_pixels_gives_release_defaults_and_warns():
  acc = metrics.DatasetMetrics()
  rng = np.random.default_rng(7)
  for _ in range(2):
    acc.update(rng.random((8, 8)).astype(np.float32) * 0.4, np.zeros((8, 8), np.uint8))
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    result = acc.result()
  messages = " ".join(str(w.message) for w in caught)
  assert "recall set to 1" in messages and "pixel_auc set to 0.5" in messages
  assert "image_auc set to 0.5" in messages
  assert result["pixel_recall"] == 1.0
  assert result["pixel_precision"] == 1.0  # nothing predicted either
  assert result["pixel_f1"] == 1.0  # the release's formula: both conventions give 1
  assert result["pixel_auc"] == 0.5
  assert result["pixel_iou"] == 0.0
  assert result["image_auc"] == 0.5


def test_valid_map_excludes_pixels():
  prob = np.array([[0.9, 0.9], [0.1, 0.9]], np.float32)
  mask = np.array([[1, 0], [0, 1]], np.uint8)
  valid = np.array([[True, False], [True, True]])
  acc = metrics.DatasetMetrics()
  acc.update(prob, mask, valid=valid)
  result = acc.result()
  assert result["num_pixels"] == 3
  assert result["pixel_f1"] == 1.0


def test_curves_from_counts_match_sklearn():
  probs, masks = _random_split(8, quantise=20)
  scores, labels = _pooled(probs, masks)
  table = metrics.ExactScoreTable()
  table.update(scores, labels.astype(bool))
  fpr, tpr, _ = metrics.roc_curve_from_counts(*table.counts())
  expected_fpr, expected_tpr, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
  np.testing.assert_allclose(fpr, expected_fpr, atol=1e-9)
  np.testing.assert_allclose(tpr, expected_tpr, atol=1e-9)
  precision, recall, _ = metrics.precision_recall_curve_from_counts(*table.counts())
  expected_precision, expected_recall, _ = skm.precision_recall_curve(
    labels, scores, drop_intermediate=False
  )
  # scikit-learn lists thresholds ascending and appends the (1, 0) end point.
  np.testing.assert_allclose(precision, expected_precision[:-1][::-1], atol=1e-9)
  np.testing.assert_allclose(recall, expected_recall[:-1][::-1], atol=1e-9)


def test_histogram_mode_keeps_exact_f1_and_approximates_auc():
  probs, masks = _random_split(10)
  exact, approx = metrics.DatasetMetrics(), metrics.DatasetMetrics(histogram_bins=1 << 10)
  for prob, mask in zip(probs, masks, strict=True):
    exact.update(prob, mask)
    approx.update(prob, mask)
  exact_result, approx_result = exact.result(), approx.result()
  assert approx_result["pixel_f1"] == exact_result["pixel_f1"]
  assert approx_result["pixel_auc"] == pytest.approx(exact_result["pixel_auc"], abs=5e-3)
  assert approx_result["auc_method"] == "histogram1024"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("protocol", metrics.PROTOCOLS)
@pytest.mark.parametrize("histogram_bins", [None, 1024])
def test_every_protocol_refuses_a_map_with_a_non_finite_probability(protocol, histogram_bins, bad):
  probs, masks = _random_split(0, num_images=2)
  acc = metrics.make_accumulator(protocol, histogram_bins=histogram_bins)
  acc.update(probs[0], masks[0])
  broken = probs[1].copy()
  broken[3, 4] = bad
  with pytest.raises(metrics.NonFiniteScoresError, match="not finite: .* of 480 values"):
    acc.update(broken, masks[1])
  valid = np.ones(broken.shape, bool)
  valid[3, 4] = False  # e.g. padding: what is left out of the metrics may be anything
  acc.update(broken, masks[1], valid=valid)
  assert acc.detection.result()["num_images"] == 2


def test_a_nan_map_is_refused_rather_than_ranked_as_distinct_values():
  """NaN != NaN: the tie handling used to count each NaN pixel as its own distinct value, so an
  all-NaN map had an AUC that depended on the mask's layout instead of being no number at all."""
  mask = np.zeros((8, 8), np.uint8)
  mask[:4] = 1
  nan_map = np.full((8, 8), np.nan, np.float32)
  for compute in (
    lambda: metrics.value_counts(nan_map, mask),
    lambda: metrics.single_map_auc(nan_map, mask),
    lambda: metrics.single_map_best_f1(nan_map, mask),
    lambda: metrics.per_image_record(nan_map, mask),
    lambda: metrics.ConfusionCounts.from_maps(nan_map, mask),
    lambda: metrics.ExactScoreTable().update(nan_map.ravel(), mask.ravel()),
    lambda: metrics.HistogramScoreTable(16).update(nan_map.ravel(), mask.ravel()),
  ):
    with pytest.raises(metrics.NonFiniteScoresError, match="64 NaN and 0 infinite of 64 values"):
      compute()


@pytest.mark.parametrize("rule", ["top1", "top5", "max", "mean", "area"])
def test_image_scores_refuse_non_finite_maps_and_scores(rule):
  prob = np.full((10, 10), 0.2, np.float32)
  prob[0, 0] = np.nan
  with pytest.raises(metrics.NonFiniteScoresError, match="1 NaN"):
    metrics.image_score_fn(rule)(prob)
  with pytest.raises(metrics.NonFiniteScoresError, match="image score not finite"):
    metrics.DetectionMetrics().update(float("nan"), True)


def _centred_forgeries(num=6, size=(120, 160), seed=0):
  """Maps whose tampered square always covers the middle, plus noise probabilities."""
  rng = np.random.default_rng(seed)
  items = []
  for _ in range(num):
    mask = np.zeros(size, bool)
    top, left = rng.integers(30, 50), rng.integers(40, 60)
    mask[top : top + 40, left : left + 48] = True
    items.append((rng.random(size).astype(np.float32), mask))
  return items


def test_centre_controlled_auc_is_near_half_for_a_map_of_position_alone():
  items = _centred_forgeries()
  position_only = metrics.DatasetMetrics()
  for _, mask in items:
    position_only.update(1.0 - metrics.relative_distance_from_centre(*mask.shape), mask)
  result = position_only.result()
  assert result["pixel_auc"] > 0.95
  assert 0.5 <= result["pixel_auc_centre_controlled"] < 0.6


def test_centre_controlled_auc_scores_a_map_that_knows_the_content():
  knows = metrics.DatasetMetrics()
  for noise, mask in _centred_forgeries():
    knows.update(np.where(mask, 0.5 + 0.5 * noise, 0.5 * noise), mask)
  assert knows.result()["pixel_auc_centre_controlled"] == 1.0


def test_centre_controlled_auc_with_one_ring_is_the_pooled_auc_and_honours_valid():
  one_ring = metrics.CentreControlledAUC(num_rings=1, num_bins=1 << 20)
  valid = np.ones((120, 160), bool)
  valid[:, :5] = False
  scores, labels = [], []
  for noise, mask in _centred_forgeries():
    probs = np.clip(noise + 0.3 * mask, 0, 1).astype(np.float32)
    one_ring.update(probs, mask, valid)
    scores.append(probs[valid])
    labels.append(mask[valid])
  expected = skm.roc_auc_score(np.concatenate(labels), np.concatenate(scores))
  assert one_ring.result() == pytest.approx(expected, abs=1e-5)
