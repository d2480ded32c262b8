"""The MOAP/DPAL math against plain NumPy transcriptions of the release's code.

GCLion/SDPAL ``sdpal.py``: ``GraphRandomWalkNPR`` (MOAP: neighbouring-pixel
residual, thresholded cosine graph, random walk with restart) and
``DiffAttention2D`` (DPAL's differential attention).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdpal_jax import ops
from sdpal_jax.ops import correlation


def _realistic_features(rng, shape):
  """Non-negative, spatially smooth features (as after a ReLU): a non-empty graph."""
  x = rng.normal(size=shape)
  for axis in (1, 2):
    x = (x + np.roll(x, 1, axis=axis) + np.roll(x, -1, axis=axis)) / 3
  return np.maximum(x + 0.3, 0).astype(np.float32)


def numpy_resize_align_corners(x, out_h, out_w):
  def axis_weights(n_in, n_out):
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
      src = 0.0 if n_out == 1 or n_in == 1 else i * (n_in - 1) / (n_out - 1)
      lo = min(int(np.floor(src)), n_in - 1)
      hi = min(lo + 1, n_in - 1)
      m[i, lo] += 1 - (src - lo)
      m[i, hi] += src - lo
    return m

  mh = axis_weights(x.shape[1], out_h)
  mw = axis_weights(x.shape[2], out_w)
  return np.einsum("oh,bhwc,pw->bopc", mh, x, mw)


def numpy_walk(x, steps=3, a=0.7, threshold=0.4):
  """The release's O(N^3) recursion W(k+1) = a W(k) A + (1-a) I, G = W(K) X."""
  b, h, w, d = x.shape
  out = []
  for i in range(b):
    nodes = x[i].reshape(-1, d).astype(np.float64)
    unit = nodes / np.maximum(np.linalg.norm(nodes, axis=1, keepdims=True), 1e-12)
    sim = unit @ unit.T
    sim = sim * (sim >= threshold)
    np.fill_diagonal(sim, 0.0)
    affinity = sim / (sim.sum(1, keepdims=True) + 1e-8)
    walk = np.eye(len(nodes))
    for _ in range(steps):
      walk = a * walk @ affinity + (1 - a) * np.eye(len(nodes))
    out.append((walk @ nodes).reshape(h, w, d))
  return np.stack(out)


@pytest.mark.parametrize(
  "in_size,out_size", [((4, 6), (7, 11)), ((8, 8), (4, 4)), ((5, 3), (1, 2))]
)
def test_resize_matches_align_corners_formula(in_size, out_size):
  x = np.random.default_rng(0).normal(size=(2, *in_size, 3)).astype(np.float32)
  got = ops.resize_bilinear_align_corners(jnp.asarray(x), out_size)
  np.testing.assert_allclose(got, numpy_resize_align_corners(x, *out_size), atol=1e-5)


@pytest.mark.parametrize("size", [(8, 8), (7, 10)])
def test_neighbour_pixel_residual_is_x_minus_down_up(size):
  x = np.random.default_rng(1).normal(size=(2, *size, 5)).astype(np.float32)
  h, w = size
  small = numpy_resize_align_corners(x, h // 2, w // 2)
  expected = x - numpy_resize_align_corners(small, h, w)
  np.testing.assert_allclose(ops.neighbour_pixel_residual(jnp.asarray(x)), expected, atol=1e-5)


@pytest.mark.parametrize(
  "size",
  [
    (4, 4),
    (7, 10),
    pytest.param((9, 6), marks=pytest.mark.slow),
    pytest.param((16, 12), marks=pytest.mark.slow),
  ],
)
def test_neighbour_pixel_residual_vanishes_on_linear_ramps(size):
  """Bilinear align_corners resampling reproduces an affine map exactly (both grids keep the
  corners, and linear interpolation of samples of a linear function is that function), so the
  residual of any affine ramp is zero once each downsampled side has two samples (sides >= 4);
  a quadratic is not reproduced."""
  h, w = size
  yy, xx = np.mgrid[:h, :w].astype(np.float32)
  ramp = np.stack([2 * yy - 3 * xx + 5, 0.5 * xx, -yy, np.full_like(xx, 7.0)], -1)[None]
  np.testing.assert_allclose(ops.neighbour_pixel_residual(jnp.asarray(ramp)), 0.0, atol=1e-5)
  quadratic = (xx**2 + yy * xx)[None, ..., None]
  assert np.abs(ops.neighbour_pixel_residual(jnp.asarray(quadratic))).max() > 1.0


def test_cosine_affinity_thresholds_drops_self_loops_and_normalises_rows():
  rng = np.random.default_rng(2)
  x = _realistic_features(rng, (1, 5, 5, 8)).reshape(1, 25, 8)
  x[0, 3] = 0.0  # an isolated node: its row must stay empty
  affinity = np.asarray(ops.cosine_affinity(jnp.asarray(x), threshold=0.4))[0]
  unit = x[0] / np.maximum(np.linalg.norm(x[0], axis=1, keepdims=True), 1e-12)
  sim = unit @ unit.T
  sim = sim * (sim >= 0.4)
  np.fill_diagonal(sim, 0)
  np.testing.assert_allclose(affinity, sim / (sim.sum(1, keepdims=True) + 1e-8), atol=1e-6)
  assert np.all(np.diag(affinity) == 0)
  assert np.all(affinity[3] == 0)
  nonempty = sim.sum(1) > 0
  np.testing.assert_allclose(affinity[nonempty].sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize("steps,restart", [(3, 0.3), (1, 0.5), (0, 0.3)])
def test_dense_walk_matches_release_recursion(steps, restart):
  x = _realistic_features(np.random.default_rng(3), (2, 6, 5, 16))
  got = ops.random_walk_with_restart(jnp.asarray(x), steps=steps, restart=restart, method="dense")
  np.testing.assert_allclose(got, numpy_walk(x, steps, 1 - restart), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("similarity_cache_mib", [0, 1], ids=["recomputed", "cached"])
@pytest.mark.parametrize("block_size", [1, 2, 3, 7, 10, 15, 30, 512])
def test_blocked_walk_matches_dense_for_any_block_size(block_size, similarity_cache_mib):
  x = _realistic_features(np.random.default_rng(4), (2, 6, 5, 16))
  dense = ops.random_walk_with_restart(jnp.asarray(x), method="dense")
  blocked = ops.random_walk_with_restart(
    jnp.asarray(x),
    method="blocked",
    block_size=block_size,
    similarity_cache_mib=similarity_cache_mib,
  )
  np.testing.assert_allclose(blocked, dense, rtol=1e-5, atol=1e-5)


def test_blocked_walk_never_materialises_the_full_affinity():
  """XLA's own buffer accounting: blocked needs slabs of N x block, dense all of A."""
  n_side, block = 32, 32
  n = n_side * n_side
  x = jnp.zeros((1, n_side, n_side, 8))

  def temp_bytes(method, gradient=False, **opts):
    def walk(v):
      return ops.random_walk_with_restart(v, method=method, **opts)

    fn = jax.grad(lambda v: jnp.sum(walk(v) ** 2)) if gradient else walk
    return jax.jit(fn).lower(x).compile().memory_analysis().temp_size_in_bytes

  full_affinity = n * n * 4
  no_cache = {"block_size": block, "similarity_cache_mib": 0}
  assert temp_bytes("dense") >= full_affinity
  assert temp_bytes("blocked", **no_cache) < full_affinity / 4
  assert temp_bytes("dense", gradient=True) >= 2 * full_affinity
  assert temp_bytes("blocked", gradient=True, **no_cache) < full_affinity / 1.5


def test_blocked_walk_keeps_the_similarities_only_within_the_cache_budget():
  """The cache (S's distinct block pairs, ~N^2 / 2 floats) is held iff the batch's fits the budget."""
  n_side, block = 32, 32
  cache_bytes = ops.similarity_cache_bytes(n_side * n_side, block)
  # 32 blocks of 32 nodes: 32 diagonal blocks, 16 opposite pairs, 15 offsets of 32 pairs
  assert cache_bytes == (32 + 16 + 15 * 32) * 32 * 32 * 4

  def temp_bytes(batch, cache_mib):
    x = jnp.zeros((batch, n_side, n_side, 8))
    fn = jax.jit(
      lambda v: ops.random_walk_with_restart(
        v, method="blocked", block_size=block, similarity_cache_mib=cache_mib
      )
    )
    return fn.lower(x).compile().memory_analysis().temp_size_in_bytes

  exact_fit = cache_bytes / 2**20
  assert temp_bytes(1, exact_fit) >= cache_bytes
  assert temp_bytes(1, 0.99 * exact_fit) < cache_bytes / 2
  # the budget is for the whole batch: two images need twice the cache
  assert temp_bytes(2, 1.5 * exact_fit) < cache_bytes
  assert temp_bytes(2, 2 * exact_fit) >= 2 * cache_bytes


@pytest.mark.parametrize("row_normalization", ["sampled", "exact"])
@pytest.mark.slow
def test_sampled_walk_error_shrinks_as_landmarks_grow(row_normalization):
  x = _realistic_features(np.random.default_rng(5), (1, 16, 16, 16))
  exact = numpy_walk(x)
  errors = []
  for landmarks in (16, 64, 192):
    est = ops.random_walk_with_restart(
      jnp.asarray(x),
      method="sampled",
      key=jax.random.key(0),
      num_landmarks=landmarks,
      row_normalization=row_normalization,
    )
    errors.append(float(np.mean(np.abs(est - exact)) / np.mean(np.abs(exact))))
  assert errors[0] > errors[1] > errors[2]
  assert errors[2] < 0.03


def test_sampled_walk_with_exact_row_sums_is_unbiased_on_average_over_keys():
  x = _realistic_features(np.random.default_rng(6), (1, 6, 6, 8))
  exact = numpy_walk(x)
  estimate = jax.jit(
    jax.vmap(
      lambda key: ops.random_walk_with_restart(
        jnp.asarray(x), method="sampled", key=key, num_landmarks=6, row_normalization="exact"
      )
    )
  )
  estimates = np.asarray(estimate(jax.random.split(jax.random.key(0), 256)))
  single_error = np.mean(np.abs(estimates[0] - exact))
  mean_error = np.mean(np.abs(np.mean(estimates, axis=0) - exact))
  assert mean_error < single_error / 6  # ~1/sqrt(256) if unbiased; a bias would not average out


def test_sampled_walk_with_every_node_as_landmark_is_exact():
  x = _realistic_features(np.random.default_rng(10), (1, 4, 4, 8))
  est = ops.random_walk_with_restart(
    jnp.asarray(x), method="sampled", key=jax.random.key(0), num_landmarks=16
  )
  np.testing.assert_allclose(est, numpy_walk(x), rtol=1e-5, atol=1e-5)


def test_stratified_node_sample_draws_every_node_equally_often():
  keys = jax.random.split(jax.random.key(3), 4000)
  ids = np.asarray(jax.vmap(lambda k: correlation.stratified_node_sample(k, 10, 4))(keys))
  assert ids.min() >= 0 and ids.max() <= 9
  counts = np.bincount(ids.ravel(), minlength=10) / len(keys)
  np.testing.assert_allclose(counts, 0.4, atol=0.03)  # inclusion probability m / n


def test_sampled_walk_needs_an_explicit_key():
  with pytest.raises(ValueError, match="PRNG key"):
    ops.random_walk_with_restart(jnp.ones((1, 2, 2, 3)), method="sampled")


def test_unknown_walk_method_is_rejected():
  with pytest.raises(ValueError, match="method"):
    ops.random_walk_with_restart(jnp.ones((1, 2, 2, 3)), method="exact")


@pytest.mark.parametrize(
  "method,opts",
  [
    ("dense", {}),
    # 16 nodes: 4 blocks (even: the opposite-block offset), 3 (odd), 6 and 1,
    # similarities recomputed in every step (and in the backward pass)
    ("blocked", {"block_size": 4, "similarity_cache_mib": 0}),
    ("blocked", {"block_size": 6, "similarity_cache_mib": 0}),
    ("blocked", {"block_size": 3, "similarity_cache_mib": 0}),
    ("blocked", {"block_size": 16, "similarity_cache_mib": 0}),
    # the default budget: S's block pairs cached across steps
    ("blocked", {"block_size": 4}),
    ("blocked", {"block_size": 3}),
    ("blocked", {"block_size": 16}),
  ],
)
def test_walk_gradients_are_finite_and_agree(method, opts):
  x = jnp.asarray(_realistic_features(np.random.default_rng(7), (1, 4, 4, 6)))

  def loss(v):
    return jnp.sum(ops.random_walk_with_restart(v, method=method, **opts) ** 2)

  grad = jax.grad(loss)(x)
  assert np.all(np.isfinite(grad))
  dense_grad = jax.grad(lambda v: jnp.sum(ops.random_walk_with_restart(v) ** 2))(x)
  np.testing.assert_allclose(grad, dense_grad, rtol=1e-4, atol=1e-4)


def test_sampled_walk_gradients_are_finite():
  x = jnp.asarray(_realistic_features(np.random.default_rng(8), (1, 4, 4, 6)))
  grad = jax.grad(
    lambda v: jnp.sum(ops.random_walk_with_restart(v, method="sampled", key=jax.random.key(1)))
  )(x)
  assert np.all(np.isfinite(grad))


def test_walk_works_under_jit_and_vmap():
  x = jnp.asarray(_realistic_features(np.random.default_rng(9), (3, 2, 4, 4, 6)))
  fn = jax.jit(jax.vmap(lambda v: ops.random_walk_with_restart(v, method="blocked", block_size=3)))
  got = fn(x)
  expected = np.stack([numpy_walk(np.asarray(v)) for v in x])
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def numpy_differential_attention(q1, k1, q2, k2, v, heads):
  b, n, c = q1.shape
  d = c // heads

  def split(t):
    return t.reshape(b, n, heads, d).transpose(0, 2, 1, 3)

  def softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)

  a1 = softmax(split(q1) @ split(k1).transpose(0, 1, 3, 2) / np.sqrt(d))
  a2 = softmax(split(q2) @ split(k2).transpose(0, 1, 3, 2) / np.sqrt(d))
  return ((a1 - a2) @ split(v)).transpose(0, 2, 1, 3).reshape(b, n, c)


def test_differential_attention_matches_numpy():
  rng = np.random.default_rng(10)
  q1, k1, q2, k2, v = (rng.normal(size=(2, 12, 16)).astype(np.float32) for _ in range(5))
  got = ops.differential_attention(*(jnp.asarray(t) for t in (q1, k1, q2, k2, v)), num_heads=4)
  np.testing.assert_allclose(got, numpy_differential_attention(q1, k1, q2, k2, v, 4), atol=1e-5)


@pytest.mark.slow
def test_differential_attention_in_query_blocks_equals_all_at_once():
  rng = np.random.default_rng(1)
  q1, k1, q2, k2, v = (jnp.asarray(rng.normal(size=(2, 37, 8)), jnp.float32) for _ in range(5))
  whole = ops.differential_attention(q1, k1, q2, k2, v, num_heads=2, query_block_size=None)
  blocked = ops.differential_attention(q1, k1, q2, k2, v, num_heads=2, query_block_size=8)
  np.testing.assert_allclose(blocked, whole, atol=1e-6)

  def loss(block):
    def f(q1, k1, v):
      out = ops.differential_attention(q1, k1, q2, k2, v, num_heads=2, query_block_size=block)
      return jnp.sum(out**2)

    return jax.grad(f, argnums=(0, 1, 2))(q1, k1, v)

  for got, want in zip(loss(8), loss(None), strict=True):
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_differential_attention_is_zero_when_both_maps_agree():
  rng = np.random.default_rng(11)
  q, k, v = (jnp.asarray(rng.normal(size=(1, 9, 8)).astype(np.float32)) for _ in range(3))
  np.testing.assert_allclose(ops.differential_attention(q, k, q, k, v, num_heads=2), 0.0, atol=1e-6)


def test_srm_residuals_are_each_kernel_on_each_channel_with_reflected_borders():
  images = np.random.default_rng(0).uniform(0, 255, (2, 11, 13, 3)).astype(np.float32)
  residuals = np.asarray(ops.srm_noise_residuals(jnp.asarray(images)))
  assert residuals.shape == (2, 11, 13, 9)
  padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
  for channel in range(3):
    for k in range(3):
      kernel = ops.SRM_KERNELS[:, :, k]
      expected = np.zeros((2, 11, 13), np.float32)
      for dy in range(5):
        for dx in range(5):
          expected += kernel[dy, dx] * padded[:, dy : dy + 11, dx : dx + 13, channel]
      np.testing.assert_allclose(residuals[..., 3 * channel + k], expected, atol=1e-3)


def test_srm_residuals_ignore_content_that_the_kernels_predict():
  # Zero on a constant photo (every kernel sums to 0, edges included: reflected, not
  # zero-padded) and on a linear ramp away from the borders (each kernel is a
  # second difference); an offset leaves the residual as it is, a scale scales it.
  assert np.abs(np.asarray(ops.srm_noise_residuals(jnp.full((1, 9, 9, 3), 117.0)))).max() < 1e-4
  ys, xs = np.mgrid[0:12, 0:12].astype(np.float32)
  ramp = np.stack([3 * ys + 2 * xs] * 3, -1)[None]
  assert np.abs(np.asarray(ops.srm_noise_residuals(jnp.asarray(ramp)))[:, 2:-2, 2:-2]).max() < 1e-3
  noise = np.random.default_rng(1).normal(size=(1, 10, 10, 3)).astype(np.float32)
  base = np.asarray(ops.srm_noise_residuals(jnp.asarray(noise)))
  shifted = np.asarray(ops.srm_noise_residuals(jnp.asarray(2.5 * noise - 40.0)))
  np.testing.assert_allclose(shifted, 2.5 * base, atol=1e-3)
  assert np.abs(base).mean() > 0.1
