r"""How well does pixel colour alone localise the forgeries of a dataset?

A dataset where the tampered pixels have tell-tale colours can be "solved"
without any forensic evidence. This baseline estimates
``p(tampered | colour)`` on the training split with a 3-D colour histogram
(``--bins`` per channel, Laplace-smoothed) and scores each test pixel by it;
pixel F1 (best single threshold and 0.5) and AUC use the dataset protocol of
:mod:`sdpal_jax.metrics`. A score near the prior (AUC ~0.5) means colour
carries no shortcut.

  python tools/colour_baseline.py --dataset synthetic_forgery/mixed_small \
      --image_size 128 --out /tmp/colour_baseline.json
"""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
from absl import app, flags

from sdpal_jax import input_pipeline, metrics


def colour_indices(images: np.ndarray, bins: int) -> np.ndarray:
  """uint8 ``[..., 3]`` -> flat histogram cell ``[...]`` in ``[0, bins**3)``."""
  q = (images.astype(np.int64) * bins) // 256
  return (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]


def fit_colour_model(images: np.ndarray, masks: np.ndarray, bins: int = 16) -> np.ndarray:
  """``p(tampered | colour cell)`` ``[bins**3]`` from uint8 images ``[N,H,W,3]`` and masks ``[N,H,W]``."""
  cells = colour_indices(images, bins).ravel()
  tampered = np.bincount(cells, weights=masks.ravel().astype(np.float64), minlength=bins**3)
  total = np.bincount(cells, minlength=bins**3).astype(np.float64)
  prior = masks.mean()
  return (tampered + prior) / (total + 1.0)  # one pseudo-count at the prior


def colour_probabilities(model: np.ndarray, images: np.ndarray, bins: int = 16) -> np.ndarray:
  """Per-pixel ``p(tampered)`` ``[N, H, W]`` from the colour model."""
  return model[colour_indices(images, bins)]


def evaluate_colour_baseline(dataset: str, image_size: int, bins: int = 16) -> dict:
  config = input_pipeline.default_data_config()
  config.dataset = dataset
  size = (image_size, image_size)
  train_images, train_masks, _ = input_pipeline.load_split(config, "train", size)
  test_images, test_masks, _ = input_pipeline.load_split(config, "test", size)
  model = fit_colour_model(train_images, train_masks, bins)
  probs = colour_probabilities(model, test_images, bins)
  dataset_metrics = metrics.DatasetMetrics()
  best = metrics.BestThresholdMetrics()
  for prob, mask in zip(probs, test_masks, strict=True):
    dataset_metrics.update(prob, mask)
    best.update(prob, mask)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", metrics.MetricWarning)
    at_half, at_best = dataset_metrics.result(), best.result()
  return {
    "dataset": dataset,
    "bins": bins,
    "tampered_pixel_fraction": float(test_masks.mean()),
    "pixel_auc": float(at_half["pixel_auc"]),
    "pixel_f1_at_0.5": float(at_half["pixel_f1"]),
    "pixel_f1_best_dataset_threshold": float(at_best["pixel_f1_best_dataset"]),
    "pixel_f1_best_per_image_threshold": float(at_best["pixel_f1"]),
  }


FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "synthetic_forgery/mixed_small", "tfds name or evaluation source.")
flags.DEFINE_integer("image_size", 128, "Square size images are resized to.")
flags.DEFINE_integer("bins", 16, "Histogram cells per colour channel.")
flags.DEFINE_string("out", None, "Write the result as JSON here.")


def main(argv):
  del argv
  result = evaluate_colour_baseline(FLAGS.dataset, FLAGS.image_size, FLAGS.bins)
  json.dump(result, sys.stdout, indent=2)
  print()
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  app.run(main)
