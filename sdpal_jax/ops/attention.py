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
  query_block_size: int | None = 512,
) -> jnp.ndarray:
  """``(softmax(Q1 K1^T / sqrt d) - softmax(Q2 K2^T / sqrt d)) V`` per head.

  Args:
    q1, k1, q2, k2, v: ``[B, N, C]`` projections (N positions, C channels).
    num_heads: heads; each uses d = C / num_heads contiguous channels.
    query_block_size: queries attended at once. Each softmax row depends on
      one query only, so blocks of queries give the same result while holding
      ``[B, heads, query_block_size, N]`` maps instead of ``[B, heads, N, N]``
      (16 GiB per map for N = 128 x 128 positions, a 1024 x 1024 input, with 8
      heads in float32). Blocks are rematerialised in the backward pass.
      ``None``: all queries at once.

  Returns:
    ``[B, N, C]``. The two maps are subtracted with weight 1 (no learnable
    lambda), as in the SDPAL release.
  """
  b, n, c = q1.shape
  scale = 1.0 / jnp.sqrt(jnp.asarray(c // num_heads, jnp.float32)).astype(q1.dtype)
  keys1, keys2 = split_heads(k1, num_heads), split_heads(k2, num_heads)
  values = split_heads(v, num_heads)

  def attend(queries1: jnp.ndarray, queries2: jnp.ndarray) -> jnp.ndarray:
    """``[B, heads, n_q, d]`` queries -> ``[B, heads, n_q, d]`` outputs."""

    def attention_map(q, k):
      logits = jnp.einsum("bhnd,bhmd->bhnm", q, k)
      return jax.nn.softmax((logits * scale).astype(jnp.float32), axis=-1)

    diff = attention_map(queries1, keys1) - attention_map(queries2, keys2)
    return jnp.einsum("bhnm,bhmd->bhnd", diff.astype(v.dtype), values)

  queries1, queries2 = split_heads(q1, num_heads), split_heads(q2, num_heads)
  if query_block_size is None or n <= query_block_size:
    return merge_heads(attend(queries1, queries2))
  blocks = -(-n // query_block_size)
  pad = blocks * query_block_size - n

  def to_blocks(q):
    q = jnp.pad(q, ((0, 0), (0, 0), (0, pad), (0, 0)))
    q = q.reshape(b, num_heads, blocks, query_block_size, -1)
    return jnp.moveaxis(q, 2, 0)  # [blocks, B, heads, block, d]

  out = jax.lax.map(
    lambda qs: jax.checkpoint(attend)(*qs), (to_blocks(queries1), to_blocks(queries2))
  )
  out = jnp.moveaxis(out, 0, 2).reshape(b, num_heads, blocks * query_block_size, -1)
  return merge_heads(out[:, :, :n])
