"""Training augmentations and the pixel degradations, as stateless TensorFlow ops.

Every random function takes a ``seed`` int32/int64 tensor of shape [2] and is
a pure function of its inputs and that seed (``tf.random.stateless_*``), so a
batch is reproducible from ``(config seed, global example index)`` and a
resumed run sees the same augmented pixels as an uninterrupted one.

Images are uint8 ``[H, W, 3]`` in and out (0..255); masks uint8 ``[H, W]`` in
{0, 1}. Pixel-changing augmentations (JPEG re-compression, blur, noise) touch
the image only: they imitate the post-processing of published photos, which
is what the robustness protocol of IMDL-BenCo (Ma et al., 2024) later tests,
and leave the tampered region where it was.

``jpeg``, ``gaussian_blur`` and ``gaussian_noise`` are the project's only
implementation of these degradations: training draws their strengths inside
``tf.data`` (``augment_example``), and robustness evaluation
(``sdpal_jax.perturbations``) calls the same ops eagerly with fixed strengths,
so a model is tested on exactly the degradation it was trained with.
"""

from __future__ import annotations

import ml_collections
import tensorflow as tf


def _split(seed: tf.Tensor, count: int) -> list[tf.Tensor]:
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=count)
  return [seeds[i] for i in range(count)]


def random_hflip(image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """Mirrors image ``[H, W, 3]`` and mask ``[H, W]`` together with probability 1/2."""
  flip = tf.random.stateless_uniform([], seed) < 0.5
  return (
    tf.cond(flip, lambda: image[:, ::-1], lambda: image),
    tf.cond(flip, lambda: mask[:, ::-1], lambda: mask),
  )


def random_resized_crop(
  image: tf.Tensor,
  mask: tf.Tensor,
  seed: tf.Tensor,
  size: tuple[int, int],
  scale: tuple[float, float] = (0.5, 1.0),
  ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[tf.Tensor, tf.Tensor]:
  """A crop of ``scale`` of the area and ``ratio`` aspect, resized to ``size`` (H, W).

  The image is resampled bilinearly (with antialiasing when shrinking), the
  mask by nearest neighbour so it stays binary. As torchvision's
  RandomResizedCrop (Szegedy et al., 2015), sampled by
  ``tf.image.stateless_sample_distorted_bounding_box``.
  """
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
    tf.shape(image),
    bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
    seed=seed,
    min_object_covered=0.0,
    aspect_ratio_range=ratio,
    area_range=scale,
    max_attempts=20,
    use_image_if_no_bounding_boxes=True,
  )
  image = tf.slice(image, begin, crop_size)
  mask = tf.slice(mask, begin[:2], crop_size[:2])
  image = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear", antialias=True)
  mask = tf.image.resize(mask[..., None], size, method="nearest")[..., 0]
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8), mask


def jpeg(image: tf.Tensor, quality: tf.Tensor | int) -> tf.Tensor:
  """Encodes and decodes uint8 ``image`` as JPEG at ``quality`` (1..100).

  TensorFlow's libjpeg encoder (``tf.image.adjust_jpeg_quality``): the
  standard IJG quantisation tables scaled by ``quality``, 4:2:0 chroma
  subsampling.
  """
  return tf.image.adjust_jpeg_quality(image, quality)


def jpeg_recompress(image: tf.Tensor, seed: tf.Tensor, quality: tuple[int, int]) -> tf.Tensor:
  """``jpeg`` with a quality drawn uniformly from the integers ``quality[0]..quality[1]``."""
  q = tf.random.stateless_uniform(
    [], seed, minval=quality[0], maxval=quality[1] + 1, dtype=tf.int32
  )
  return jpeg(image, q)


BLUR_TRUNCATE = 3.0  # kernel radius in standard deviations


def gaussian_blur(image: tf.Tensor, sigma: tf.Tensor | float) -> tf.Tensor:
  """Gaussian blur of uint8 ``[H, W, C]`` with standard deviation ``sigma`` pixels.

  The kernel is the Gaussian sampled at the integer offsets ``-r..r`` with
  ``r = floor(3 sigma + 0.5)`` and normalised to sum 1, applied separably
  (columns, then rows) in float32; the result is rounded to the nearest grey
  level. Borders are padded by symmetric reflection, ``d c b a | a b c d |
  d c b a`` (TensorFlow's ``SYMMETRIC``, scipy.ndimage's ``reflect``), so the
  output equals ``scipy.ndimage.gaussian_filter(image, (sigma, sigma, 0),
  mode="reflect", truncate=3)`` up to float rounding. ``r`` is capped at the
  image's shorter side (where the reflection runs out); ``sigma = 0`` returns
  the image unchanged. ``sigma`` may be a tensor (drawn inside ``tf.data``).
  """
  sigma = tf.cast(sigma, tf.float32)
  shape = tf.shape(image)
  radius = tf.cast(tf.floor(BLUR_TRUNCATE * sigma + 0.5), tf.int32)
  radius = tf.minimum(radius, tf.minimum(shape[0], shape[1]))
  offsets = tf.cast(tf.range(-radius, radius + 1), tf.float32)
  kernel = tf.exp(-0.5 * tf.square(offsets / tf.maximum(sigma, 1e-6)))
  kernel /= tf.reduce_sum(kernel)
  x = tf.transpose(tf.cast(image, tf.float32), [2, 0, 1])[..., None]  # channels as a batch
  x = tf.pad(x, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="SYMMETRIC")
  x = tf.nn.conv2d(x, tf.reshape(kernel, [-1, 1, 1, 1]), 1, "VALID")
  x = tf.nn.conv2d(x, tf.reshape(kernel, [1, -1, 1, 1]), 1, "VALID")
  x = tf.transpose(x[..., 0], [1, 2, 0])
  return tf.reshape(tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8), shape)


def gaussian_noise(image: tf.Tensor, seed: tf.Tensor, std: tf.Tensor | float) -> tf.Tensor:
  """Adds N(0, std^2) noise (0..255 units, drawn from ``seed``), rounds and clips to uint8."""
  noise = tf.random.stateless_normal(tf.shape(image), seed, stddev=std)
  return tf.cast(tf.clip_by_value(tf.round(tf.cast(image, tf.float32) + noise), 0, 255), tf.uint8)


def augment_example(
  image: tf.Tensor,
  mask: tf.Tensor,
  seed: tf.Tensor,
  config: ml_collections.ConfigDict,
  size: tuple[int, int],
) -> tuple[tf.Tensor, tf.Tensor]:
  """Applies the augmentations ``config`` switches on; output image ``[*size, 3]``.

  The input must already be at ``size`` unless a random resized crop is
  configured (``crop_scale`` other than (1, 1)), which produces ``size``.
  """
  crop_seed, flip_seed, jpeg_seed, jpeg_on, blur_seed, blur_on, noise_seed = _split(seed, 7)
  if tuple(config.crop_scale) != (1.0, 1.0):
    image, mask = random_resized_crop(
      image, mask, crop_seed, size, tuple(config.crop_scale), tuple(config.crop_ratio)
    )
  if config.hflip:
    image, mask = random_hflip(image, mask, flip_seed)
  if config.jpeg_prob > 0:
    image = tf.cond(
      tf.random.stateless_uniform([], jpeg_on) < config.jpeg_prob,
      lambda: jpeg_recompress(image, jpeg_seed, tuple(config.jpeg_quality)),
      lambda: image,
    )
  if config.blur_prob > 0:
    sigma = tf.random.stateless_uniform(
      [], blur_seed, minval=config.blur_sigma[0], maxval=config.blur_sigma[1]
    )
    image = tf.cond(
      tf.random.stateless_uniform([], blur_on) < config.blur_prob,
      lambda: gaussian_blur(image, sigma),
      lambda: image,
    )
  if config.noise_std > 0:
    image = gaussian_noise(image, noise_seed, float(config.noise_std))
  image = tf.ensure_shape(image, [*size, 3])
  mask = tf.ensure_shape(mask, list(size))
  return image, mask
