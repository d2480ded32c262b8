"""Turning uint8 photos into network input, shared by training, evaluation and inference."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from PIL import Image

from sdpal_jax.errors import ConfigError

# ImageNet statistics in 0..255 units (as torchvision's 0.485/0.456/0.406 x 255).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def normalize_images(images, normalization: str):
  """uint8 or float ``[..., H, W, 3]`` in 0..255 -> float32 network input.

  ``"raw"``: 0..255 floats unchanged (the SDPAL release feeds raw pixels).
  ``"imagenet"``: (x - mean) / std with ImageNet statistics.
  Works on NumPy and JAX arrays alike.
  """
  xp = jnp if isinstance(images, jnp.ndarray) and not isinstance(images, np.ndarray) else np
  x = xp.asarray(images).astype(xp.float32)
  if normalization == "raw":
    return x
  if normalization == "imagenet":
    mean = xp.asarray(IMAGENET_MEAN, xp.float32)
    std = xp.asarray(IMAGENET_STD, xp.float32)
    return (x - mean) / std
  raise ConfigError(f"normalization={normalization!r}; expected 'raw' or 'imagenet'.")


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Resizes a uint8 ``[H, W, 3]`` photo to ``size=(H', W')`` with PIL bilinear.

  This is what torchvision's ``transforms.Resize`` does on a PIL image, i.e.
  the release's preprocessing (antialiased when shrinking).
  """
  h, w = int(size[0]), int(size[1])
  if image.shape[:2] == (h, w):
    return image
  return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Resizes a {0,1} uint8 ``[H, W]`` mask to ``size`` as the release: bilinear on 0..255, > 128."""
  h, w = int(size[0]), int(size[1])
  if mask.shape[:2] == (h, w):
    return mask
  resized = np.asarray(
    Image.fromarray((mask * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
  )
  return (resized > 128).astype(np.uint8)
