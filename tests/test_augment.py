"""One JPEG / blur / noise for training and robustness evaluation; the blur is a true Gaussian."""

import zlib

import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from sdpal_jax import augment, data_config, perturbations


def _photo(shape=(37, 53, 3), seed=0):
  """Noise on a smooth gradient: both sharp edges and flat areas."""
  rng = np.random.default_rng(seed)
  h, w, _ = shape
  ramp = np.linspace(0, 200, w)[None, :, None] + np.linspace(0, 50, h)[:, None, None]
  return np.clip(ramp + rng.normal(0, 40, shape), 0, 255).astype(np.uint8)


def _sampled_gaussian_blur(image, sigma):
  """NumPy: kernel exp(-x^2 / 2 sigma^2) on -r..r, r = floor(3 sigma + 0.5), summed to 1,
  rows then columns, symmetric-reflection borders (d c b a | a b c d)."""
  radius = int(np.floor(3 * sigma + 0.5))
  offsets = np.arange(-radius, radius + 1)
  kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
  kernel /= kernel.sum()
  x = np.pad(image.astype(np.float64), [(radius, radius), (radius, radius), (0, 0)], "symmetric")
  x = np.apply_along_axis(np.convolve, 0, x, kernel, mode="valid")
  x = np.apply_along_axis(np.convolve, 1, x, kernel, mode="valid")
  return x


@pytest.mark.parametrize("sigma", [0.5, 0.8, 1.0, 1.5, 2.0, 2.6])
def test_blur_is_a_sampled_gaussian_within_one_grey_level(sigma):
  image = _photo()
  ours = augment.gaussian_blur(tf.constant(image), sigma).numpy().astype(int)
  assert ours.shape == image.shape
  scipy_blur = ndimage.gaussian_filter(
    image.astype(np.float64), (sigma, sigma, 0), mode="reflect", truncate=3.0
  )
  assert np.abs(ours - scipy_blur).max() <= 1.0
  # Against the NumPy transcription: ours is its value rounded (0.5 + float32 error).
  assert np.abs(ours - _sampled_gaussian_blur(image, sigma)).max() < 0.501
  # The robustness perturbation is the same op.
  np.testing.assert_array_equal(perturbations.gaussian_blur(image, sigma), ours)


def test_blur_edge_cases():
  image = _photo((6, 9, 3))
  np.testing.assert_array_equal(augment.gaussian_blur(tf.constant(image), 0.0).numpy(), image)
  np.testing.assert_array_equal(perturbations.gaussian_blur(image, 0.0), image)
  # A radius (3 * 4 = 12) beyond the image's side is capped, not an error.
  big = augment.gaussian_blur(tf.constant(image), 4.0).numpy()
  assert big.shape == image.shape and big.std() < image.std()
  # Inside a graph with a drawn sigma and unknown image size (as in tf.data).
  fn = tf.function(
    augment.gaussian_blur,
    input_signature=[
      tf.TensorSpec([None, None, 3], tf.uint8),
      tf.TensorSpec([], tf.float32),
    ],
  )
  photo = _photo()
  np.testing.assert_array_equal(
    fn(tf.constant(photo), tf.constant(1.5)).numpy(),
    augment.gaussian_blur(tf.constant(photo), 1.5).numpy(),
  )


def _augment_in_tf_data(image, **fields):
  """``augment_example`` as training runs it: inside a tf.data map (graph mode)."""
  config = data_config.default_data_config().augment
  config.hflip = False
  for k, v in fields.items():
    config[k] = v
  size = image.shape[:2]
  ds = tf.data.Dataset.from_tensors((image, np.zeros(size, np.uint8))).map(
    lambda x, m: augment.augment_example(x, m, tf.constant([3, 4], tf.int64), config, size)
  )
  out_image, out_mask = next(ds.as_numpy_iterator())
  np.testing.assert_array_equal(out_mask, np.zeros(size, np.uint8))
  return out_image


@pytest.mark.parametrize("quality", [30, 75, 95])
def test_training_jpeg_equals_the_robustness_jpeg(quality):
  image = _photo()
  trained = _augment_in_tf_data(image, jpeg_prob=1.0, jpeg_quality=(quality, quality))
  evaluated = perturbations.Perturbation("jpeg", quality)(image, key="a.png")
  assert np.abs(trained.astype(int) - image).mean() > 1  # it did re-compress
  np.testing.assert_array_equal(trained, evaluated)


@pytest.mark.parametrize("sigma", [0.8, 1.0, 2.0])
def test_training_blur_equals_the_robustness_blur(sigma):
  image = _photo()
  trained = _augment_in_tf_data(image, blur_prob=1.0, blur_sigma=(sigma, sigma))
  evaluated = perturbations.Perturbation("blur", sigma)(image, key="a.png")
  assert np.any(trained != image)
  np.testing.assert_array_equal(trained, evaluated)


def test_training_noise_equals_the_robustness_noise_for_the_same_seed():
  image = _photo()
  key = "photo_017.jpg"
  seed = perturbations.noise_seed(zlib.crc32(key.encode()))
  trained = augment.gaussian_noise(tf.constant(image), tf.constant(seed), 5.0).numpy()
  evaluated = perturbations.Perturbation("noise", 5)(image, key=key)
  np.testing.assert_array_equal(trained, evaluated)
  assert np.any(evaluated != perturbations.Perturbation("noise", 5)(image, key="other.jpg"))
  diff = evaluated.astype(float) - image
  assert diff.std() == pytest.approx(5.0, rel=0.15)
