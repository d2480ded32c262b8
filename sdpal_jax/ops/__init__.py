"""Pure array math of SDPAL (NHWC, no Flax, no I/O)."""

from sdpal_jax.ops.attention import differential_attention, merge_heads, split_heads
from sdpal_jax.ops.convolution import CONV_IMPLS, conv2d, conv_general_dilated
from sdpal_jax.ops.correlation import (
  affinity_row_sums,
  caches_similarities,
  cosine_affinity,
  l2_normalize,
  neighbour_pixel_residual,
  random_walk_with_restart,
  similarity_cache_bytes,
)
from sdpal_jax.ops.noise_residual import SRM_KERNELS, srm_noise_residuals
from sdpal_jax.ops.resize import resize_bilinear_align_corners

__all__ = [
  "CONV_IMPLS",
  "SRM_KERNELS",
  "conv2d",
  "conv_general_dilated",
  "affinity_row_sums",
  "caches_similarities",
  "cosine_affinity",
  "differential_attention",
  "l2_normalize",
  "merge_heads",
  "neighbour_pixel_residual",
  "random_walk_with_restart",
  "resize_bilinear_align_corners",
  "similarity_cache_bytes",
  "split_heads",
  "srm_noise_residuals",
]
