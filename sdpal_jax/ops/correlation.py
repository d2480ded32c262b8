"""MOAP math: neighbouring-pixel residual, cosine affinity, random walk with restart.

All functions are pure and take NHWC arrays. They compute MOAP, the graph
stage of the paper ("SDPAL: Spatial Difference Patterns Adaptive Learning for
Image Forgery Localization"), as the public PyTorch release does in
``GraphRandomWalkNPR`` (GCLion/SDPAL, ``sdpal.py``: ``_compute_npr``,
``_build_graph``, ``_random_walk``).

Notation: for one image, ``X`` is the ``[N, D]`` matrix of node features
(N = H*W pixels of the feature map), ``S`` the thresholded cosine similarity
with a zero diagonal, and ``A = S / (rowsum(S) + 1e-8)`` the row-stochastic
transition matrix. With continue probability ``a = 1 - restart`` the release
computes ``W(0) = I, W(k+1) = a W(k) A + (1 - a) I`` and returns
``G = W(K) X``. Since every W(k) is a polynomial in A,

  ``G = Y(K)`` with ``Y(0) = X, Y(k+1) = a A Y(k) + (1 - a) X``,

which costs O(N^2 D) per step instead of O(N^3), and only needs products
``A @ Y`` — rows of A can be generated block by block and thrown away.
The ``sampled`` method estimates each ``A @ Y`` from an independent random
sample of landmark nodes, so only the last step touches all N rows.
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


def _symmetric_similarity_products(
  unit_blocks: jnp.ndarray, y_blocks: jnp.ndarray, threshold: float, with_row_sums: bool
) -> tuple[jnp.ndarray, jnp.ndarray | None]:
  """``S @ Y`` (and ``rowsum(S)``) visiting each unordered pair of node blocks once.

  S is symmetric, so the block ``S[i, j] = U_i U_j^T`` (thresholded) serves
  both ``out_i += S[i, j] Y_j`` and ``out_j += S[i, j]^T Y_i``: about half the
  similarity products of a row-by-row pass (3 instead of 4 matrix products
  of N^2 D multiply-adds per walk step). Pairs are taken a cyclic offset at
  a time, ``j = (i + o) mod nb`` for all i at once (batched products over
  the nb blocks); offsets 1 .. ceil(nb/2) - 1 cover every pair of distinct
  blocks once, offset 0 the diagonal blocks, and for even nb offset nb/2
  pairs each block with its opposite from both sides (used one way only).

  Args:
    unit_blocks: ``[nb, block, D]`` unit-norm node features, zero rows as padding.
    y_blocks: ``[nb, block, E]``.
    threshold: similarities below it are not edges.
    with_row_sums: also return ``rowsum(S)`` ``[nb, block]`` (else None).

  Returns:
    ``([nb, block, E], [nb, block] or None)``; peak memory O(N * block).
  """
  num_blocks, block, _ = unit_blocks.shape
  local_ids = jnp.arange(block)

  def similarity(offset):
    partner = jnp.roll(unit_blocks, -offset, axis=0)
    # Only the diagonal blocks (offset 0) pair a node with itself.
    partner_ids = jnp.where(offset == 0, local_ids, local_ids + block)
    return _thresholded_similarity(unit_blocks, partner, threshold, local_ids, partner_ids)

  def one_way(offset, sim):
    partner_y = jnp.roll(y_blocks, -offset, axis=0)
    out = jnp.einsum("bmn,bne->bme", sim, partner_y, precision=jax.lax.Precision.HIGHEST)
    return out, sim.sum(-1) if with_row_sums else None

  def both_ways(offset):
    sim = similarity(offset)
    out, sums = one_way(offset, sim)
    back = jnp.einsum("bmn,bme->bne", sim, y_blocks, precision=jax.lax.Precision.HIGHEST)
    out = out + jnp.roll(back, offset, axis=0)
    if with_row_sums:
      sums = sums + jnp.roll(sim.sum(-2), offset, axis=0)
    return out, sums

  out, sums = one_way(0, similarity(0))
  if num_blocks % 2 == 0 and num_blocks > 1:
    opposite_out, opposite_sums = one_way(num_blocks // 2, similarity(num_blocks // 2))
    out = out + opposite_out
    sums = sums + opposite_sums if with_row_sums else None
  num_pair_offsets = (num_blocks - 1) // 2
  if num_pair_offsets:

    @jax.checkpoint  # backward recomputes each offset's similarities: O(N * block) memory
    def add_offset(carry, offset):
      out, sums = carry
      more, more_sums = both_ways(offset)
      return (out + more, sums + more_sums if with_row_sums else sums), None

    init = (out, sums if with_row_sums else jnp.zeros(()))
    (out, sums), _ = jax.lax.scan(add_offset, init, jnp.arange(1, num_pair_offsets + 1))
  return out, sums if with_row_sums else None


def _walk_blocked(
  x: jnp.ndarray, *, steps: int, restart: float, threshold: float, block_size: int = 1024
) -> jnp.ndarray:
  """Exact, holding O(N x block_size) similarities at a time, never all of S. x: ``[N, D]``.

  Each ``A @ Y`` is ``(S @ Y) / (rowsum(S) + 1e-8)`` with ``S @ Y`` computed
  block pair by block pair (``_symmetric_similarity_products``; the row sums
  come with the first step's products), so peak memory is
  O(block_size * N + N * D), gradients included: each block pair's
  similarities are recomputed in the backward pass.
  """
  n, d = x.shape
  block = max(1, min(int(block_size), n))
  num_blocks = -(-n // block)
  padded = num_blocks * block
  x32 = x.astype(jnp.float32)
  # Padding nodes have zero features: similarity 0 with everything, so they
  # never carry weight (for threshold > 0 they are dropped; otherwise weight 0).
  unit_blocks = jnp.pad(l2_normalize(x32), ((0, padded - n), (0, 0))).reshape(num_blocks, block, d)
  a = 1.0 - restart
  y, row_sums = x32, None
  for _ in range(steps):
    y_blocks = jnp.pad(y, ((0, padded - n), (0, 0))).reshape(num_blocks, block, d)
    products, sums = _symmetric_similarity_products(
      unit_blocks, y_blocks, threshold, with_row_sums=row_sums is None
    )
    if row_sums is None:
      row_sums = sums.reshape(padded, 1)
    y = a * (products.reshape(padded, d) / (row_sums + _ROW_EPS))[:n] + restart * x32
  return y.astype(x.dtype)


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


def stratified_node_sample(key: jax.Array, n: int, m: int) -> jnp.ndarray:
  """``m`` node ids, one drawn uniformly from each of ``m`` equal strata of ``[0, n)``: ``[m]``.

  Stratum j is the real interval ``[j n/m, (j+1) n/m)``; every node is drawn
  with probability exactly ``m / n``, and since nodes are in raster order the
  sample is spread evenly over the image (less variance than i.i.d. draws on
  spatially correlated features).
  """
  u = jax.random.uniform(key, (m,))
  ids = jnp.floor((jnp.arange(m) + u) * (n / m)).astype(jnp.int32)
  return jnp.minimum(ids, n - 1)


def _walk_sampled(
  x: jnp.ndarray,
  *,
  steps: int,
  restart: float,
  threshold: float,
  key: jax.Array,
  num_landmarks: int = 1024,
  row_normalization: str = "sampled",
  block_size: int = 512,
) -> jnp.ndarray:
  """Monte-Carlo estimate of G by landmark sampling, for one image. x: ``[N, D]``.

  Each step k of ``Y(k+1) = a A Y(k) + (1-a) X`` replaces ``A Y`` by a sum
  over an independent stratified sample ``L_k`` of M = ``num_landmarks``
  nodes: ``(A Y)_i ~ sum_{c in L_k} A^_ic Y_c``. Only the last step needs all
  N rows; earlier steps only need Y on the next step's landmarks, so

    ``Z_1 = X[L_1]``, ``Z_{k+1} = a A^[L_{k+1}, L_k] Z_k + (1-a) X[L_{k+1}]``,
    ``G = a A^[:, L_K] Z_K + (1-a) X``,

  which costs ``2 N M D`` multiply-adds for the last step and ``2 M^2 D`` for
  each earlier one, all as dense matrix products (no gathers per walker),
  against ``~2 K N^2 D`` for the exact walk. ``A^`` is the transition
  restricted to the landmarks, with the self-loop mask and threshold applied:

  * ``row_normalization="sampled"`` (default): each row of the thresholded
    similarity is divided by its own sum over the landmarks (self-normalised
    importance sampling). No O(N^2) pass at all; consistent, with a bias of
    order 1/(number of landmark neighbours), and a node with no neighbour
    among the landmarks gets an all-zero row, as the release's empty rows.
  * ``row_normalization="exact"``: one exact O(N^2 D) pass (held block by
    block, no N x N storage) gives the row sums r_i, and
    ``A^_ic = (N / M) S_ic / (r_i + 1e-8)``; the estimate is then unbiased
    (independent unbiased factors per step).

  With ``num_landmarks >= N`` the sample would be the whole graph, and the
  exact blocked walk is used instead.
  """
  n, d = x.shape
  if steps == 0:
    return x
  if row_normalization not in ("sampled", "exact"):
    raise ValueError(f"row_normalization={row_normalization!r}; expected 'sampled' or 'exact'")
  m = int(num_landmarks)
  if m < 1:
    raise ValueError(f"num_landmarks={num_landmarks!r} must be >= 1")
  if m >= n:
    return _walk_blocked(
      x, steps=steps, restart=restart, threshold=threshold, block_size=block_size
    )
  a = 1.0 - restart
  x32 = x.astype(jnp.float32)
  unit = l2_normalize(x32)
  landmarks = [stratified_node_sample(k, n, m) for k in jax.random.split(key, steps)]
  if row_normalization == "exact":
    inv_row_sums = (n / m) / (affinity_row_sums(x32, threshold, block_size) + _ROW_EPS)

  def transition(row_ids: jnp.ndarray, col_ids: jnp.ndarray) -> jnp.ndarray:
    sim = _thresholded_similarity(unit[row_ids], unit[col_ids], threshold, row_ids, col_ids)
    if row_normalization == "exact":
      return sim * inv_row_sums[row_ids][:, None]
    return sim / (jnp.sum(sim, axis=-1, keepdims=True) + _ROW_EPS)

  def product(matrix: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    return jnp.matmul(matrix, y, precision=jax.lax.Precision.HIGHEST)

  z = x32[landmarks[0]]
  for k in range(1, steps):
    z = a * product(transition(landmarks[k], landmarks[k - 1]), z) + restart * x32[landmarks[k]]

  # Last step over all N rows, block_size rows at a time: O(block_size * M) memory.
  block = max(1, min(int(block_size), n))
  num_blocks = -(-n // block)
  row_blocks = jnp.minimum(jnp.arange(num_blocks * block), n - 1).reshape(num_blocks, block)

  @jax.checkpoint
  def last_step(row_ids):
    return product(transition(row_ids, landmarks[-1]), z)

  walked = jax.lax.map(last_step, row_blocks).reshape(-1, d)[:n]
  return (a * walked + restart * x32).astype(x.dtype)


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
      (Monte-Carlo over landmark nodes; options ``key`` (required),
      ``num_landmarks``, ``row_normalization``, ``block_size``).

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
