"""MOAP math: neighbouring-pixel residual, cosine affinity, random walk with restart.

All functions are pure and take NHWC arrays (design.md §1, "MOAP").

Notation: for one image, ``X`` is the ``[N, D]`` matrix of node features
(N = H*W pixels of the feature map), ``S`` the thresholded cosine similarity
with a zero diagonal, and ``A = S / (rowsum(S) + 1e-8)`` the row-stochastic
transition matrix. With continue probability ``a = 1 - restart`` the release
computes ``W(0) = I, W(k+1) = a W(k) A + (1 - a) I`` and returns
``G = W(K) X``. Since every W(k) is a polynomial in A,

  ``G = Y(K)`` with ``Y(0) = X, Y(k+1) = a A Y(k) + (1 - a) X``,

which costs O(N^2 D) per step instead of O(N^3), and only needs products
``A @ Y`` — rows of A can be generated block by block and thrown away.
Unrolled, ``G = a^K A^K X + (1 - a) sum_{k<K} a^k A^k X``: the expected
feature seen by a walker after a K-truncated geometric number of steps, which
is what the ``sampled`` method estimates by Monte Carlo.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from sdpal_jax.ops.resize import resize_bilinear_align_corners

_ROW_EPS = 1e-8  # the release's row-normalisation epsilon
_NORM_EPS = 1e-12  # torch.nn.functional.normalize's default eps


def neighbour_pixel_residual(x: jnp.ndarray) -> jnp.ndarray:
  """NPR: ``x - up(down(x))`` with bilinear align_corners=True resizes.

  Args:
    x: ``[B, H, W, C]`` features.

  Returns:
    ``[B, H, W, C]``: the high-frequency part that a 2x down/up-sampling loses.
    The downsampled size is ``floor(H/2) x floor(W/2)`` (at least 1), as
    PyTorch's ``scale_factor=0.5`` with ``recompute_scale_factor=True``; the
    upsample goes back to exactly ``H x W`` (the release's ``scale_factor=2``
    only agrees for even sizes, where it fails for odd ones).
  """
  _, h, w, _ = x.shape
  small = resize_bilinear_align_corners(x, (max(h // 2, 1), max(w // 2, 1)))
  return x - resize_bilinear_align_corners(small, (h, w))


def l2_normalize(x: jnp.ndarray, axis: int = -1) -> jnp.ndarray:
  """``x / max(||x||, 1e-12)`` along ``axis`` (torch's F.normalize)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
  return x / jnp.maximum(norm, _NORM_EPS)


def _thresholded_similarity(
  queries: jnp.ndarray, keys: jnp.ndarray, threshold: float, query_ids, key_ids
) -> jnp.ndarray:
  """S block: cosine similarities of unit vectors, below threshold or self -> 0.

  Args:
    queries: ``[..., M, D]`` unit-norm rows.
    keys: ``[..., N, D]`` unit-norm rows.
    query_ids, key_ids: integer node ids ``[M]`` and ``[N]`` for the self-loop mask.
  """
  sim = jnp.einsum("...md,...nd->...mn", queries, keys, precision=jax.lax.Precision.HIGHEST)
  keep = (sim >= threshold) & (query_ids[:, None] != key_ids[None, :])
  return jnp.where(keep, sim, 0.0)


def cosine_affinity(x: jnp.ndarray, threshold: float = 0.4) -> jnp.ndarray:
  """Row-stochastic pixel affinity A, ``[B, N, D] -> [B, N, N]``.

  Cosine similarity between all node pairs; entries below ``threshold`` and
  the diagonal set to 0; each row divided by (its sum + 1e-8). A row with no
  neighbour above the threshold stays all-zero.
  """
  n = x.shape[-2]
  unit = l2_normalize(x.astype(jnp.float32))
  ids = jnp.arange(n)
  sim = _thresholded_similarity(unit, unit, threshold, ids, ids)
  return sim / (jnp.sum(sim, axis=-1, keepdims=True) + _ROW_EPS)


def _walk_recursion(
  x: jnp.ndarray, apply_affinity: Callable[[jnp.ndarray], jnp.ndarray], steps: int, restart: float
) -> jnp.ndarray:
  """``Y <- a * A @ Y + (1 - a) * X`` for ``steps`` steps, A given as an operator."""
  a = 1.0 - restart
  y = x
  for _ in range(steps):
    y = a * apply_affinity(y) + restart * x
  return y


def _walk_dense(x: jnp.ndarray, *, steps: int, restart: float, threshold: float) -> jnp.ndarray:
  """Exact: materialises A ``[N, N]`` once. x: ``[N, D]``."""
  affinity = cosine_affinity(x, threshold)
  return _walk_recursion(
    x,
    lambda y: jnp.matmul(affinity, y, precision=jax.lax.Precision.HIGHEST),
    steps,
    restart,
  )


def _walk_blocked(
  x: jnp.ndarray, *, steps: int, restart: float, threshold: float, block_size: int = 512
) -> jnp.ndarray:
  """Exact, holding at most a ``[block_size, N]`` slab of A at a time. x: ``[N, D]``.

  Each ``A @ Y`` regenerates the rows of A block by block (similarity,
  threshold, self-loop mask and row normalisation are all row-local), so peak
  memory is O(block_size * N + N * D). The block function is rematerialised
  in the backward pass, so gradients keep the same bound.
  """
  n, d = x.shape
  block = max(1, min(int(block_size), n))
  num_blocks = -(-n // block)
  padded = num_blocks * block
  unit = l2_normalize(x.astype(jnp.float32))
  # Padding nodes have zero features: similarity 0 with everything, so they
  # never carry weight (for threshold > 0 they are dropped; otherwise weight 0).
  unit_padded = jnp.pad(unit, ((0, padded - n), (0, 0)))
  unit_blocks = unit_padded.reshape(num_blocks, block, d)
  key_ids = jnp.arange(n)

  @jax.checkpoint
  def rows_times(query_block, block_index, y):
    query_ids = block_index * block + jnp.arange(block)
    sim = _thresholded_similarity(query_block, unit, threshold, query_ids, key_ids)
    rows = sim / (jnp.sum(sim, axis=-1, keepdims=True) + _ROW_EPS)
    return jnp.matmul(rows, y, precision=jax.lax.Precision.HIGHEST)

  def apply_affinity(y):
    out = jax.lax.map(
      lambda args: rows_times(args[0], args[1], y), (unit_blocks, jnp.arange(num_blocks))
    )
    return out.reshape(padded, -1)[:n]

  return _walk_recursion(x.astype(jnp.float32), apply_affinity, steps, restart).astype(x.dtype)


def affinity_row_sums(x: jnp.ndarray, threshold: float, block_size: int = 512) -> jnp.ndarray:
  """``rowsum(S)`` for node features ``[N, D]`` without holding S: ``[N]``."""
  n, d = x.shape
  block = max(1, min(int(block_size), n))
  num_blocks = -(-n // block)
  unit = l2_normalize(x.astype(jnp.float32))
  unit_blocks = jnp.pad(unit, ((0, num_blocks * block - n), (0, 0))).reshape(num_blocks, block, d)
  key_ids = jnp.arange(n)

  def block_sums(args):
    query_block, block_index = args
    query_ids = block_index * block + jnp.arange(block)
    return _thresholded_similarity(query_block, unit, threshold, query_ids, key_ids).sum(-1)

  return jax.lax.map(block_sums, (unit_blocks, jnp.arange(num_blocks))).reshape(-1)[:n]


def _walk_sampled(
  x: jnp.ndarray,
  *,
  steps: int,
  restart: float,
  threshold: float,
  key: jax.Array,
  num_walkers: int = 32,
  num_candidates: int = 32,
  chunk_size: int = 256,
  block_size: int = 512,
) -> jnp.ndarray:
  """Monte-Carlo estimate of G for one image. x: ``[N, D]``.

  Estimator (unbiased for every term of ``G = (1-a) sum_{k<K} a^k A^k X +
  a^K A^K X``):

  1. One exact pass computes the row sums r_i of S (O(N^2 D) flops, O(block*N)
     memory, no storage of S), so ``A_ij = S_ij / (r_i + 1e-8)`` can be
     evaluated for any single pair.
  2. Each of ``num_walkers`` walkers per node starts at its node with weight 1.
     At every step it draws ``num_candidates`` nodes uniformly; the importance
     weights ``w_p = N * A_{pos, c_p}`` give the unbiased estimate
     ``weight * mean_p(w_p X_{c_p})`` of the next term ``(A^k X)_i``. The
     walker then moves to one candidate chosen with probability ∝ w_p and its
     weight is multiplied by ``mean_p(w_p)`` (sampling-importance-resampling
     with the mean-weight correction, which keeps the path estimate unbiased;
     a walker on a node without neighbours gets weight 0, as A's empty rows).
  3. The node's estimate is the average over its walkers.

  Cost: the row-sum pass plus ``N * num_walkers * steps * num_candidates * D``
  multiply-adds; memory O(chunk_size * num_walkers * num_candidates * D).
  Error: standard error falls as 1 / sqrt(num_walkers * num_candidates); it
  is largest where a node's affinity is concentrated on few neighbours
  (uniform proposals rarely hit them).
  """
  n, d = x.shape
  a = 1.0 - restart
  x32 = x.astype(jnp.float32)
  if steps == 0:
    return x
  unit = l2_normalize(x32)
  inv_row_sums = 1.0 / (affinity_row_sums(x32, threshold, block_size) + _ROW_EPS)
  term_weights = [restart * a**k for k in range(steps)] + [a**steps]

  chunk = max(1, min(int(chunk_size), n))
  num_chunks = -(-n // chunk)
  node_ids = jnp.pad(jnp.arange(n), (0, num_chunks * chunk - n)).reshape(num_chunks, chunk)
  chunk_keys = jax.random.split(key, num_chunks)

  def estimate_chunk(args):
    starts, chunk_key = args  # [chunk], key
    pos = jnp.broadcast_to(starts[:, None], (chunk, num_walkers))
    weight = jnp.ones((chunk, num_walkers), jnp.float32)
    total = term_weights[0] * x32[starts]
    step_keys = jax.random.split(chunk_key, steps)
    for k in range(1, steps + 1):
      cand_key, move_key = jax.random.split(step_keys[k - 1])
      cands = jax.random.randint(cand_key, (chunk, num_walkers, num_candidates), 0, n)
      sim = jnp.einsum("cwd,cwpd->cwp", unit[pos], unit[cands], precision=jax.lax.Precision.HIGHEST)
      keep = (sim >= threshold) & (cands != pos[..., None])
      importance = jnp.where(keep, sim, 0.0) * (n * inv_row_sums[pos])[..., None]
      term = jnp.einsum("cwp,cwpd->cwd", importance, x32[cands]) / num_candidates
      total = total + term_weights[k] * jnp.mean(weight[..., None] * term, axis=1)
      if k < steps:
        mean_importance = importance.mean(-1)
        logits = jnp.where(importance > 0, jnp.log(jnp.maximum(importance, 1e-30)), -jnp.inf)
        logits = jnp.where(mean_importance[..., None] > 0, logits, 0.0)
        choice = jax.random.categorical(move_key, logits, axis=-1)
        pos = jnp.take_along_axis(cands, choice[..., None], axis=-1)[..., 0]
        weight = weight * mean_importance
    return total

  out = jax.lax.map(estimate_chunk, (node_ids, chunk_keys)).reshape(-1, d)[:n]
  return out.astype(x.dtype)


_METHODS = {"dense": _walk_dense, "blocked": _walk_blocked, "sampled": _walk_sampled}


def random_walk_with_restart(
  x: jnp.ndarray,
  *,
  steps: int = 3,
  restart: float = 0.3,
  threshold: float = 0.4,
  method: str = "dense",
  **method_options,
) -> jnp.ndarray:
  """Aggregates node features by a K-step random walk with restart.

  Args:
    x: ``[B, H, W, D]`` node features (in SDPAL, ``concat(F, NPR(F))``).
    steps: K, the number of walk steps (release: 3).
    restart: 1 - a, the chance of jumping back to the start node at a step
      (release: ``walk_restart_prob=0.7`` is a, so restart=0.3).
    threshold: cosine similarities below it are not edges (release: 0.4).
    method: "dense" (exact, builds A: O(N^2) memory), "blocked" (exact,
      O(block_size * N) memory; option ``block_size``) or "sampled"
      (Monte-Carlo; options ``key`` (required), ``num_walkers``,
      ``num_candidates``, ``chunk_size``, ``block_size``).

  Returns:
    ``[B, H, W, D]``: G, the walk-weighted aggregate of the node features.
  """
  if method not in _METHODS:
    raise ValueError(f"method={method!r}; expected one of {sorted(_METHODS)}")
  b, h, w, d = x.shape
  nodes = x.reshape(b, h * w, d)
  if method == "sampled":
    if "key" not in method_options:
      raise ValueError("method='sampled' needs a PRNG key: pass key=jax.random.key(...)")
    keys = jax.random.split(method_options.pop("key"), b)
    fn = functools.partial(
      _walk_sampled, steps=steps, restart=restart, threshold=threshold, **method_options
    )
    out = jax.vmap(lambda xi, ki: fn(xi, key=ki))(nodes, keys)
  else:
    fn = functools.partial(
      _METHODS[method], steps=steps, restart=restart, threshold=threshold, **method_options
    )
    out = jax.vmap(fn)(nodes)
  return out.reshape(b, h, w, d)
