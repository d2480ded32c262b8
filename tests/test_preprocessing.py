"""Network-input normalisation against hand numbers and torchvision's published statistics."""

import jax.numpy as jnp
import numpy as np
import pytest

from sdpal_jax import preprocessing
from sdpal_jax.errors import ConfigError

# torchvision's ImageNet statistics, for images scaled to [0, 1].
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)


def _pixels():
  return np.asarray([[[0, 128, 255], [255, 0, 17]]], np.uint8)  # [1, 2, 3]


def test_imagenet_normalisation_of_hand_picked_pixels():
  got = preprocessing.normalize_images(_pixels(), "imagenet")
  assert got.dtype == np.float32 and got.shape == (1, 2, 3)
  # (x - 255 mean) / (255 std) by hand, channel by channel.
  expected = [
    [
      [-123.675 / 58.395, (128 - 116.28) / 57.12, (255 - 103.53) / 57.375],
      [(255 - 123.675) / 58.395, -116.28 / 57.12, (17 - 103.53) / 57.375],
    ]
  ]
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  np.testing.assert_allclose(got[0, 0], [-2.117904, 0.205182, 2.64], atol=1e-5)


def test_imagenet_normalisation_equals_torchvision_on_zero_to_one_images():
  image = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
  expected = (image / 255.0 - np.asarray(TORCHVISION_MEAN)) / np.asarray(TORCHVISION_STD)
  got = preprocessing.normalize_images(image, "imagenet")
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_raw_keeps_the_pixel_values_as_float32():
  got = preprocessing.normalize_images(_pixels(), "raw")
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got, [[[0.0, 128.0, 255.0], [255.0, 0.0, 17.0]]])


def test_jax_arrays_stay_jax_arrays_with_the_same_values():
  x = jnp.asarray(_pixels())
  got = preprocessing.normalize_images(x, "imagenet")
  assert isinstance(got, jnp.ndarray) and not isinstance(got, np.ndarray)
  np.testing.assert_allclose(
    np.asarray(got), preprocessing.normalize_images(_pixels(), "imagenet"), rtol=1e-6
  )


def test_unknown_normalisation_is_named():
  with pytest.raises(ConfigError, match="normalization='zscore'"):
    preprocessing.normalize_images(_pixels(), "zscore")
