"""The colour-only baseline finds colour shortcuts and nothing else."""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
from colour_baseline import colour_probabilities, fit_colour_model  # noqa: E402


def test_colour_model_separates_tampering_that_has_its_own_colour():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 128, (4, 16, 16, 3), dtype=np.uint8)
  masks = np.zeros((4, 16, 16), np.uint8)
  masks[:, 4:8, 4:8] = 1
  images[masks == 1] = (250, 10, 10)
  probs = colour_probabilities(fit_colour_model(images, masks, bins=8), images, bins=8)
  assert probs[masks == 1].min() > 0.9
  assert probs[masks == 0].max() < 0.1


def test_colour_model_falls_back_to_the_prior_when_colour_says_nothing():
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
  masks = (rng.random((8, 64, 64)) < 0.1).astype(np.uint8)
  probs = colour_probabilities(fit_colour_model(images, masks, bins=4), images, bins=4)
  np.testing.assert_allclose(probs.mean(), masks.mean(), atol=0.01)
  assert probs.std() < 0.025  # binomial noise of ~512 pixels a cell: 0.013
