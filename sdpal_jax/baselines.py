"""Reference maps that need no model: how much of a score the layout of a dataset gives away.

Forgeries in the public test sets sit near the middle of the frame (the
objects a person chose to splice or copy), so a map that only says "the
middle" already ranks pixels well above chance. On CASIA v1.0 and COVERAGE
the centre prior below scores pixel AUC 0.66 and 0.75 (dataset protocol,
native resolution; docs/results/real_data): a localisation score is only
evidence of forensic skill by its margin over this row. Score it beside any
checkpoint with ``sdpal-evaluate --baselines centre``; the dataset protocol's
``pixel_auc_centre_controlled`` (``metrics.CentreControlledAUC``) scores a
map with the position effect taken out.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any

import numpy as np

from sdpal_jax import metrics
from sdpal_jax.errors import ConfigError


def centre_prior(height: int, width: int) -> np.ndarray:
  """float32 ``[height, width]`` in (0, 1]: 1 at the centre, falling linearly to ~0 at the corners.

  One minus ``metrics.relative_distance_from_centre`` (distance from the image
  centre in coordinates relative to height and width, over the half-diagonal).
  """
  return (1.0 - metrics.relative_distance_from_centre(height, width)).astype(np.float32)


@dataclasses.dataclass
class CentrePriorPredictor:
  """A predictor (``sdpal_jax.evaluator.PredictorLike``) that returns ``centre_prior`` for every photo.

  ``preprocess_config.image_size``: the size ``--resolution=release`` scores
  at (the release's 256x256; the map itself has no input size).
  """

  label: str = "centre_prior"
  preprocess_config: Any = dataclasses.field(
    default_factory=lambda: types.SimpleNamespace(image_size=(256, 256), normalization="raw")
  )

  def predict_probabilities(self, images: np.ndarray) -> np.ndarray:
    """uint8 ``[B, H, W, 3]`` -> float32 ``[B, H, W]`` (the same map for each image)."""
    batch, height, width = np.shape(images)[:3]
    return np.broadcast_to(centre_prior(height, width), (batch, height, width)).copy()


BASELINES = {"centre": CentrePriorPredictor}


def make_baselines(names: list[str] | tuple[str, ...]) -> list[CentrePriorPredictor]:
  """The predictors of ``--baselines NAME[,NAME...]``; an unknown name is a ConfigError."""
  unknown = [n for n in names if n not in BASELINES]
  if unknown:
    raise ConfigError(
      f"--baselines={','.join(names)}: unknown {unknown}; expected one of: {', '.join(BASELINES)}."
    )
  return [BASELINES[n]() for n in dict.fromkeys(names)]
