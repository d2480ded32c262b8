"""Differential attention (DPAL's core), as pure math on projected tensors."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def split_heads(x: jnp.ndarray, num_heads: int) -> jnp.ndarray:
  """``[B, N, C] -> [B, heads, N, C // heads]``; heads take contiguous channel chunks."""
  b, n, c = x.shape
  return x.reshape(b, n, num_heads, c // num_heads).transpose(0, 2, 1, 3)


def merge_heads(x: jnp.ndarray) -> jnp.ndarray:
  """``[B, heads, N, d] -> [B, N, heads * d]`` (inverse of split_heads)."""
  b, h, n, d = x.shape
  return x.transpose(0, 2, 1, 3).reshape(b, n, h * d)


def differential_attention(
  q1: jnp.ndarray,
  k1: jnp.ndarray,
  q2: jnp.ndarray,
  k2: jnp.ndarray,
  v: jnp.ndarray,
  num_heads: int,
) -> jnp.ndarray:
  """``(softmax(Q1 K1^T / sqrt d) - softmax(Q2 K2^T / sqrt d)) V`` per head.

  Args:
    q1, k1, q2, k2, v: ``[B, N, C]`` projections (N positions, C channels).
    num_heads: heads; each uses d = C / num_heads contiguous channels.

  Returns:
    ``[B, N, C]``. The two maps are subtracted with weight 1 (no learnable
    lambda), as in the SDPAL release.
  """
  c = q1.shape[-1]
  scale = 1.0 / jnp.sqrt(jnp.asarray(c // num_heads, jnp.float32)).astype(q1.dtype)

  def attention_map(q, k):
    logits = jnp.einsum("bhnd,bhmd->bhnm", split_heads(q, num_heads), split_heads(k, num_heads))
    return jax.nn.softmax((logits * scale).astype(jnp.float32), axis=-1)

  diff = attention_map(q1, k1) - attention_map(q2, k2)
  out = jnp.einsum("bhnm,bhmd->bhnd", diff.astype(v.dtype), split_heads(v, num_heads))
  return merge_heads(out)
