"""Fixed high-pass noise residuals of an image (the SRM filters of steganalysis).

Fridrich & Kodovsky, "Rich Models for Steganalysis of Digital Images" (IEEE
TIFS 2012) predict each pixel from its neighbours and keep the prediction
error: image content largely cancels, while sensor noise, resampling and
JPEG-grid traces stay. Zhou et al., "Learning Rich Features for Image
Manipulation Detection" (RGB-N, CVPR 2018) feed three of these kernels to a
forgery localiser as a fixed first layer; ``SRM_KERNELS`` are those three,
with RGB-N's normalisations (1/4, 1/12, 1/2). Every kernel sums to 0, so a
constant offset (mean subtraction) does not change the residual, and a
per-channel scale (std normalisation) scales it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

SRM_KERNELS = np.stack(
  [
    np.array(
      [
        [0, 0, 0, 0, 0],
        [0, -1, 2, -1, 0],
        [0, 2, -4, 2, 0],
        [0, -1, 2, -1, 0],
        [0, 0, 0, 0, 0],
      ],
      np.float32,
    )
    / 4,
    np.array(
      [
        [-1, 2, -2, 2, -1],
        [2, -6, 8, -6, 2],
        [-2, 8, -12, 8, -2],
        [2, -6, 8, -6, 2],
        [-1, 2, -2, 2, -1],
      ],
      np.float32,
    )
    / 12,
    np.array(
      [
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0],
        [0, 1, -2, 1, 0],
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0],
      ],
      np.float32,
    )
    / 2,
  ],
  axis=-1,
)  # [5, 5, 3]: (row, column, kernel)


def srm_noise_residuals(images: jnp.ndarray) -> jnp.ndarray:
  """Each SRM kernel applied to each colour channel on its own.

  Args:
    images: ``[B, H, W, C]`` floats (any units; the residual is in the same units).

  Returns:
    ``[B, H, W, 3 C]``: channel ``3 c + k`` is kernel ``k`` on input channel
    ``c``. Borders are reflected (``jnp.pad`` mode ``"reflect"``), so a
    photo's edge does not light up as a residual; images need at least 3
    pixels per side.
  """
  channels = images.shape[-1]
  half = SRM_KERNELS.shape[0] // 2
  padded = jnp.pad(images, ((0, 0), (half, half), (half, half), (0, 0)), mode="reflect")
  # Depthwise (HWIO, one input channel per group): the 3 kernels repeated per channel.
  kernel = jnp.asarray(np.tile(SRM_KERNELS[:, :, None, :], (1, 1, 1, channels)), images.dtype)
  return jax.lax.conv_general_dilated(
    padded,
    kernel,
    window_strides=(1, 1),
    padding="VALID",
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    feature_group_count=channels,
  )
