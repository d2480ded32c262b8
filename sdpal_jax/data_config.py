"""Data and augmentation configuration (ml_collections): the ``config.data`` fields.

Kept apart from ``sdpal_jax.input_pipeline`` and ``sdpal_jax.augment`` (which
run on TensorFlow) so that reading a config imports no TensorFlow.
"""

from __future__ import annotations

import ml_collections

RESIZE_POLICIES = ("resize", "random_crop")
PIPELINES = ("memory", "stream")


def default_augment_config() -> ml_collections.ConfigDict:
  """Every augmentation, off except the horizontal flip (the release uses none)."""
  c = ml_collections.ConfigDict()
  c.hflip = True
  # Random resized crop: area fraction and aspect-ratio ranges; scale (1, 1) = off.
  c.crop_scale = (1.0, 1.0)
  c.crop_ratio = (3 / 4, 4 / 3)
  # JPEG re-compression with a quality drawn from the range, with this probability.
  c.jpeg_prob = 0.0
  c.jpeg_quality = (60, 95)
  # Gaussian blur with sigma (pixels) drawn from the range, with this probability.
  c.blur_prob = 0.0
  c.blur_sigma = (0.5, 1.5)
  # Additive Gaussian noise, std in 0..255 units (0 = off).
  c.noise_std = 0.0
  return c


def default_data_config() -> ml_collections.ConfigDict:
  """Where training and validation examples come from and how they are fitted and augmented."""
  c = ml_collections.ConfigDict()
  c.dataset = "synthetic_forgery/mixed"  # tfds name, .lst, .json or Tp/Gt folder
  c.train_split = "train"
  c.eval_split = "validation"
  c.data_dir = ml_collections.config_dict.placeholder(str)  # tfds data dir (None: tfds default)
  c.pipeline = "memory"  # "memory" (exact resume) or "stream" (splits larger than RAM)
  c.shuffle_buffer = 1024  # stream pipeline only
  c.resize_policy = "resize"  # "resize" (the release) or "random_crop" at native resolution
  # Train on random (H, W) crops of the fitted images (None: the whole preprocess.image_size).
  c.crop_size = ml_collections.config_dict.placeholder(tuple)
  c.augment = default_augment_config()
  c.max_examples = ml_collections.config_dict.placeholder(int)  # cap per split (quick experiments)
  return c
