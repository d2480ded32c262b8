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
from typing import NamedTuple

import jax
import jax.numpy as jnp

from sdpal_jax.ops.resize import resize_bilinear_align_corners

_ROW_EPS = 1e-8  # the release's row-normalisation epsilon
_NORM_EPS = 1e-12  # torch.nn.functional.normalize's default eps
# "blocked": nodes per block, and the MiB per call up to which S's block pairs are kept
# across the walk steps.
DEFAULT_BLOCK_SIZE = 1024
DEFAULT_SIMILARITY_CACHE_MIB = 1024


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


def _block_similarity(
  queries: jnp.ndarray, partners: jnp.ndarray, threshold: float, diagonal: bool
) -> jnp.ndarray:
  """Thresholded similarities of block ``queries[i]`` with block ``partners[i]``: ``[nb, b, b]``.

  Args:
    queries, partners: ``[nb, block, D]`` unit-norm node features (zero rows: padding).
    diagonal: whether ``partners[i]`` is ``queries[i]`` itself (the self-loop
      mask applies only then; Python or traced bool).
  """
  block = queries.shape[1]
  local_ids = jnp.arange(block)
  partner_ids = jnp.where(diagonal, local_ids, local_ids + block)
  return _thresholded_similarity(queries, partners, threshold, local_ids, partner_ids)


def _roll_blocks(blocks: jnp.ndarray, shift) -> jnp.ndarray:
  """``jnp.roll(blocks, shift, axis=0)`` for a traced shift, as one gather.

  ``jnp.roll`` with a traced shift concatenates two copies and slices them,
  which holds a transient twice the array's size (128 MiB per roll of a
  16k x 1024 float32 array); the gather writes the rolled array directly.
  """
  num_blocks = blocks.shape[0]
  return jnp.take(blocks, (jnp.arange(num_blocks) - shift) % num_blocks, axis=0)


def _offset_similarity(unit_blocks: jnp.ndarray, offset, threshold: float) -> jnp.ndarray:
  """``S[i, (i + offset) mod nb]`` for every block i (offset >= 1): ``[nb, b, b]``."""
  return _block_similarity(unit_blocks, _roll_blocks(unit_blocks, -offset), threshold, False)


def _block_pairing(num_blocks: int) -> tuple[int, int]:
  """How ``_symmetric_similarity_products`` visits each unordered pair of node blocks once.

  The diagonal blocks ``S[i, i]``; for even nb, the ``half = nb / 2`` pairs of
  opposite blocks ``S[i, i + half]`` (i < half); and cyclic offsets
  ``S[i, (i + o) mod nb]`` for all i and o = 1 .. ``num_offsets`` = ceil(nb/2) - 1.

  Returns:
    ``(half, num_offsets)``; half is 0 for odd nb (and nb = 1).
  """
  half = num_blocks // 2 if num_blocks % 2 == 0 else 0
  return half, (num_blocks - 1) // 2


class _SimilarityCache(NamedTuple):
  """Every distinct block pair's thresholded similarities (see ``_block_pairing``)."""

  diagonal: jnp.ndarray  # [nb, b, b]
  opposite: jnp.ndarray | None  # [half, b, b]
  offsets: jnp.ndarray | None  # [num_offsets, nb, b, b]


def similarity_cache_bytes(num_nodes: int, block_size: int) -> int:
  """Bytes the blocked walk's similarity cache takes for one image of ``num_nodes`` nodes.

  About ``num_nodes^2 / 2`` float32 values (the distinct block pairs of the
  symmetric S, blocks of ``block_size`` nodes, the last one zero-padded).
  """
  block = max(1, min(int(block_size), num_nodes))
  num_blocks = -(-num_nodes // block)
  half, num_offsets = _block_pairing(num_blocks)
  return (num_blocks + half + num_offsets * num_blocks) * block * block * 4


def caches_similarities(
  num_images: int, num_nodes: int, block_size: int, similarity_cache_mib: float
) -> bool:
  """Whether the blocked walk keeps the similarity cache for a batch: its bytes within the budget."""
  cache_bytes = num_images * similarity_cache_bytes(num_nodes, block_size)
  return cache_bytes <= similarity_cache_mib * 2**20


def _similarity_cache(unit_blocks: jnp.ndarray, threshold: float) -> _SimilarityCache:
  """``_SimilarityCache`` of unit-norm node blocks ``[nb, b, D]``."""
  half, num_offsets = _block_pairing(unit_blocks.shape[0])
  return _SimilarityCache(
    diagonal=_block_similarity(unit_blocks, unit_blocks, threshold, True),
    opposite=(
      _block_similarity(unit_blocks[:half], unit_blocks[half:], threshold, False) if half else None
    ),
    offsets=jax.lax.map(
      lambda o: _offset_similarity(unit_blocks, o, threshold), jnp.arange(1, num_offsets + 1)
    )
    if num_offsets
    else None,
  )


def _symmetric_similarity_products(
  unit_blocks: jnp.ndarray,
  y_blocks: jnp.ndarray,
  threshold: float,
  with_row_sums: bool,
  cache: _SimilarityCache | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray | None]:
  """``S @ Y`` (and ``rowsum(S)``) visiting each unordered pair of node blocks once.

  S is symmetric, so the block ``S[i, j] = U_i U_j^T`` (thresholded) serves
  both ``out_i += S[i, j] Y_j`` and ``out_j += S[i, j]^T Y_i``: half the
  similarity products of a row-by-row pass (1.5 instead of 2 N^2 D
  multiply-adds per walk step: N^2 D / 2 for S, N^2 D for S @ Y). Pairs are
  taken a cyclic offset at a time, ``j = (i + o) mod nb`` for all i at once
  (batched products over the nb blocks; ``_block_pairing`` says which).

  Args:
    unit_blocks: ``[nb, block, D]`` unit-norm node features, zero rows as padding.
    y_blocks: ``[nb, block, E]``.
    threshold: similarities below it are not edges.
    with_row_sums: also return ``rowsum(S)`` ``[nb, block]`` (else None).
    cache: ``_similarity_cache(unit_blocks, threshold)``, or None to compute
      each block pair's similarities here (and again in the backward pass).

  Returns:
    ``([nb, block, E], [nb, block] or None)``; without a cache, peak memory O(N * block).
  """
  half, num_offsets = _block_pairing(unit_blocks.shape[0])
  highest = jax.lax.Precision.HIGHEST

  def forward(sim, partner_y):  # out_i += S_ij Y_j
    return jnp.einsum("bmn,bne->bme", sim, partner_y, precision=highest)

  def backward(sim, y):  # out_j += S_ij^T Y_i
    return jnp.einsum("bmn,bme->bne", sim, y, precision=highest)

  diagonal = (
    cache.diagonal
    if cache is not None
    else _block_similarity(unit_blocks, unit_blocks, threshold, True)
  )
  out = forward(diagonal, y_blocks)
  sums = diagonal.sum(-1) if with_row_sums else jnp.zeros(())
  if half:
    opposite = (
      cache.opposite
      if cache is not None
      else _block_similarity(unit_blocks[:half], unit_blocks[half:], threshold, False)
    )
    out = out + jnp.concatenate(
      [forward(opposite, y_blocks[half:]), backward(opposite, y_blocks[:half])]
    )
    if with_row_sums:
      sums = sums + jnp.concatenate([opposite.sum(-1), opposite.sum(-2)])
  if num_offsets:

    def add_offset(carry, offset_and_sim):
      out, sums = carry
      offset, sim = offset_and_sim
      if sim is None:
        sim = _offset_similarity(unit_blocks, offset, threshold)
      out = out + forward(sim, _roll_blocks(y_blocks, -offset))
      out = out + _roll_blocks(backward(sim, y_blocks), offset)
      if with_row_sums:
        sums = sums + sim.sum(-1) + _roll_blocks(sim.sum(-2), offset)
      return (out, sums), None

    if cache is None:
      # backward recomputes each offset's similarities: O(N * block) memory
      add_offset = jax.checkpoint(add_offset)
    offsets = jnp.arange(1, num_offsets + 1)
    xs = (offsets, None if cache is None else cache.offsets)
    (out, sums), _ = jax.lax.scan(add_offset, (out, sums), xs)
  return out, sums if with_row_sums else None


def _walk_blocked(
  x: jnp.ndarray,
  *,
  steps: int,
  restart: float,
  threshold: float,
  block_size: int = DEFAULT_BLOCK_SIZE,
  cache_similarities: bool = False,
) -> jnp.ndarray:
  """Exact; without the cache O(N x block_size) similarities at a time, never all of S. x: ``[N, D]``.

  Each ``A @ Y`` is ``(S @ Y) / (rowsum(S) + 1e-8)`` with ``S @ Y`` computed
  block pair by block pair (``_symmetric_similarity_products``; the row sums
  come with the first step's products), so peak memory is
  O(block_size * N + N * D), gradients included: each block pair's
  similarities are recomputed in the backward pass.

  With ``cache_similarities`` the distinct block pairs' similarities (about
  N^2 / 2 floats: ``similarity_cache_bytes``) are computed once and kept for
  all steps instead: (0.5 + K) N^2 D multiply-adds instead of 1.5 K N^2 D
  (3.5 instead of 4.5 for K = 3), at the price of holding them (and, under
  ``jax.grad``, their cotangents).
  """
  n, d = x.shape
  block = max(1, min(int(block_size), n))
  num_blocks = -(-n // block)
  padded = num_blocks * block
  x32 = x.astype(jnp.float32)
  # Padding nodes have zero features: similarity 0 with everything, so they
  # never carry weight (for threshold > 0 they are dropped; otherwise weight 0).
  unit_blocks = jnp.pad(l2_normalize(x32), ((0, padded - n), (0, 0))).reshape(num_blocks, block, d)
  cache = _similarity_cache(unit_blocks, threshold) if cache_similarities and steps > 1 else None
  a = 1.0 - restart
  y, row_sums = x32, None
  for _ in range(steps):
    y_blocks = jnp.pad(y, ((0, padded - n), (0, 0))).reshape(num_blocks, block, d)
    products, sums = _symmetric_similarity_products(
      unit_blocks, y_blocks, threshold, with_row_sums=row_sums is None, cache=cache
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
      O(block_size * N) memory; options ``block_size`` and
      ``similarity_cache_mib``) or "sampled" (Monte-Carlo over landmark
      nodes; options ``key`` (required), ``num_landmarks``,
      ``row_normalization``, ``block_size``).
    **method_options: as listed for ``method``. ``similarity_cache_mib``
      (blocked; default 1024): when the whole batch's distinct block-pair
      similarities (B x ``similarity_cache_bytes(H*W, block_size)``, about
      B N^2 / 2 floats) fit in this many MiB, they are computed once and
      reused by every step (3.5 instead of 4.5 N^2 D multiply-adds for 3
      steps), else recomputed each step; 0 always recomputes (O(N x
      block_size) memory, gradients included). Under ``jax.grad`` the cache's
      cotangents are held too, several times the cache's size: the model
      passes 0 when training (docs/performance.md has both measurements).

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
    if method == "blocked":
      method_options["cache_similarities"] = caches_similarities(
        b,
        h * w,
        method_options.get("block_size", DEFAULT_BLOCK_SIZE),
        method_options.pop("similarity_cache_mib", DEFAULT_SIMILARITY_CACHE_MIB),
      )
    fn = functools.partial(
      _METHODS[method], steps=steps, restart=restart, threshold=threshold, **method_options
    )
    out = jax.vmap(fn)(nodes)
  return out.reshape(b, h, w, d)
