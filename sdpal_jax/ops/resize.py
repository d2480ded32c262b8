"""Bilinear resizing with PyTorch's ``align_corners=True`` convention.

``jax.image.resize`` samples at pixel centres (align_corners=False); the SDPAL
release resizes with ``F.interpolate(..., mode="bilinear", align_corners=True)``,
which maps the corner pixels of input and output onto each other:
``src = dst * (in - 1) / (out - 1)``. Matching it matters for checkpoint parity.
"""

from __future__ import annotations

import jax.numpy as jnp


def _align_corners_taps(in_size: int, out_size: int):
  """Indices and weights for one axis: out[i] = (1-w) in[lo] + w in[hi]."""
  if out_size == 1 or in_size == 1:
    src = jnp.zeros((out_size,), jnp.float32)
  else:
    src = jnp.arange(out_size, dtype=jnp.float32) * ((in_size - 1) / (out_size - 1))
  lo = jnp.clip(jnp.floor(src).astype(jnp.int32), 0, in_size - 1)
  hi = jnp.minimum(lo + 1, in_size - 1)
  weight = src - lo.astype(jnp.float32)
  return lo, hi, weight


def _resize_axis(x: jnp.ndarray, axis: int, out_size: int) -> jnp.ndarray:
  in_size = x.shape[axis]
  if in_size == out_size:
    return x
  lo, hi, weight = _align_corners_taps(in_size, out_size)
  shape = [1] * x.ndim
  shape[axis] = out_size
  weight = weight.reshape(shape).astype(x.dtype)
  return jnp.take(x, lo, axis=axis) * (1 - weight) + jnp.take(x, hi, axis=axis) * weight


def resize_bilinear_align_corners(x: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
  """Resizes ``[B, H, W, C]`` to ``[B, size[0], size[1], C]`` (align_corners=True).

  Separable: rows first, then columns, as PyTorch's upsample_bilinear2d.
  Cost and memory are linear in the output size.
  """
  out_h, out_w = int(size[0]), int(size[1])
  return _resize_axis(_resize_axis(x, 1, out_h), 2, out_w)
