"""The SDPAL network: shapes, BatchNorm modes, dtypes, walk methods, a training step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from model_fixtures import tiny_model_config

from sdpal_jax import model_config
from sdpal_jax.errors import ConfigError, SdpalError
from sdpal_jax.models import ResNet, build_model, init_model


@pytest.fixture(scope="module")
def tiny():
  model = build_model(tiny_model_config())
  return model, init_model(model, jax.random.key(0), (1, 64, 64, 3))


@pytest.mark.parametrize("size", [(64, 64), (64, 96), (72, 88), (67, 93)])
@pytest.mark.slow
def test_logits_come_out_at_the_input_size(tiny, size):
  model, variables = tiny
  logits = model.apply(variables, jnp.ones((2, *size, 3)), train=False)
  assert logits.shape == (2, *size)
  assert logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))


@pytest.mark.slow
def test_release_compatible_fixed_output_size(tiny):
  _, variables = tiny
  model = build_model(tiny_model_config(output_size=(40, 50)))
  assert model.apply(variables, jnp.ones((1, 64, 96, 3)), train=False).shape == (1, 40, 50)


@pytest.mark.slow
def test_train_mode_updates_batch_stats_and_eval_mode_does_not(tiny):
  model, variables = tiny
  x = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3)) * 255
  before = jax.tree_util.tree_leaves(variables["batch_stats"])
  train_logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
  after = jax.tree_util.tree_leaves(updates["batch_stats"])
  assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))
  # Eval mode, even when allowed to, writes nothing back ...
  eval_logits, untouched = model.apply(variables, x, train=False, mutable=["batch_stats"])
  for a, b in zip(before, jax.tree_util.tree_leaves(untouched["batch_stats"]), strict=True):
    np.testing.assert_array_equal(a, b)
  # ... and normalises with the stored statistics: an image's map does not depend on the
  # other images of its batch, whereas in train mode (batch statistics) it does.
  alone = model.apply(variables, x[:1], train=False)
  np.testing.assert_allclose(alone, eval_logits[:1], rtol=1e-5, atol=1e-5)
  train_alone, _ = model.apply(variables, x[:1], train=True, mutable=["batch_stats"])
  assert not np.allclose(train_alone, train_logits[:1], rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_params_and_logits(tiny):
  _, variables = tiny
  x = jax.random.uniform(jax.random.key(2), (1, 64, 64, 3))
  half = build_model(tiny_model_config(dtype="bfloat16"))
  full = build_model(tiny_model_config())
  logits = half.apply(variables, x, train=False)
  assert logits.dtype == jnp.float32
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables["params"]))
  reference = full.apply(variables, x, train=False)
  assert np.corrcoef(np.ravel(logits), np.ravel(reference))[0, 1] > 0.9


@pytest.mark.slow
def test_walk_method_is_selectable_and_blocked_equals_dense(tiny):
  _, variables = tiny
  x = jax.random.uniform(jax.random.key(3), (1, 64, 64, 3)) * 255
  dense = build_model(tiny_model_config()).apply(variables, x, train=False)
  blocked = build_model(tiny_model_config(walk_method="blocked", walk_block_size=16)).apply(
    variables, x, train=False
  )
  np.testing.assert_allclose(blocked, dense, rtol=1e-4, atol=1e-4)
  sampled = build_model(tiny_model_config(walk_method="sampled"))
  out = sampled.apply(variables, x, train=False, rngs={"walk": jax.random.key(0)})
  assert out.shape == dense.shape


@pytest.mark.slow
def test_jitted_train_step_lowers_the_loss(tiny):
  model, variables = tiny
  images = jax.random.uniform(jax.random.key(4), (2, 64, 64, 3))
  masks = jnp.zeros((2, 64, 64)).at[:, 16:40, 20:44].set(1.0)
  optimizer = optax.adam(3e-3)
  params, batch_stats = variables["params"], variables["batch_stats"]
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, batch_stats, opt_state):
    def loss_fn(p):
      logits, updates = model.apply(
        {"params": p, "batch_stats": batch_stats}, images, train=True, mutable=["batch_stats"]
      )
      return optax.sigmoid_binary_cross_entropy(logits, masks).mean(), updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    changes, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, changes), updates["batch_stats"], opt_state, loss

  losses = []
  for _ in range(12):
    params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state)
    losses.append(float(loss))
  assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
@pytest.mark.parametrize("deep_stem", [True, False])
def test_every_resnet_depth_builds_with_release_widths(depth, deep_stem):
  net = ResNet(depth=depth, deep_stem=deep_stem, output_stride=8)
  shapes = jax.eval_shape(
    lambda: net.init_with_output(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)
  )[0]
  widths = [s.shape[-1] for s in shapes]
  expansion = 1 if depth < 50 else 4
  assert widths == [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]
  assert [s.shape[1] for s in shapes] == [16, 8, 8, 8]


@pytest.mark.parametrize(
  "stride,sizes", [(8, [16, 8, 8, 8]), (16, [16, 8, 4, 4]), (32, [16, 8, 4, 2])]
)
def test_output_stride_sets_the_stage_resolutions(stride, sizes):
  net = ResNet(depth=18, output_stride=stride)
  shapes = jax.eval_shape(
    lambda: net.init_with_output(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)
  )[0]
  assert [s.shape[1] for s in shapes] == sizes


def test_full_release_model_has_the_release_parameter_count():
  model = build_model(model_config.release_model_config())
  shapes = jax.eval_shape(
    lambda: model.init(jax.random.key(0), jnp.zeros((1, 256, 256, 3)), train=False)
  )
  count = sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes["params"]))
  # The release reports 78.3 M; its unused `mscc.decoder` (1x1 512->512 conv, BN, 1x1 512->1 conv)
  # holds 512*512 + 2*512 + 512 + 1 = 263,681 of them.
  assert abs(count + 263_681 - 78.3e6) < 0.1e6


def test_invalid_model_config_names_the_field():
  c = tiny_model_config(output_stride=12)
  with pytest.raises(ConfigError, match="output_stride"):
    build_model(c)


def test_input_smaller_than_the_decoder_needs_is_a_named_error():
  model = build_model(tiny_model_config())
  with pytest.raises(SdpalError, match="32x32 pixels is too small for output stride 8"):
    init_model(model, jax.random.key(0), (1, 32, 32, 3))


def test_moap_caches_the_walk_similarities_for_inference_only():
  """Training recomputes them: under jax.grad the cache's cotangents would cost ~6x its size."""
  from sdpal_jax import ops  # noqa: PLC0415
  from sdpal_jax.models.sdpal import MOAP  # noqa: PLC0415

  side, block = 32, 32
  cache_bytes = ops.similarity_cache_bytes(side * side, block)
  moap = MOAP(
    feature_channels=8,
    walk_method="blocked",
    walk_options=(("block_size", block), ("similarity_cache_mib", 1024)),
  )
  features = jnp.zeros((1, side, side, 8))
  variables = moap.init(jax.random.key(0), features, train=False)

  def temp_bytes(train):
    fn = jax.jit(lambda v, f: moap.apply(v, f, train=train, mutable=["batch_stats"]))
    return fn.lower(variables, features).compile().memory_analysis().temp_size_in_bytes

  assert temp_bytes(train=False) >= cache_bytes
  assert temp_bytes(train=True) < cache_bytes / 2


def test_srm_noise_residuals_widen_the_stem_input_and_have_their_own_batch_norm():
  rgb = build_model(tiny_model_config())
  srm = build_model(tiny_model_config(noise_residual="srm"))
  rgb_vars = init_model(rgb, jax.random.key(0), (1, 64, 64, 3))
  srm_vars = init_model(srm, jax.random.key(0), (1, 64, 64, 3))
  first_conv = lambda v: v["params"]["backbone"]["stem_0"]["conv"]["kernel"]  # noqa: E731
  assert first_conv(rgb_vars).shape[2] == 3
  assert first_conv(srm_vars).shape[2] == 3 + 9
  assert srm_vars["batch_stats"]["noise_residual_norm"]["bn"]["mean"].shape == (9,)
  assert "noise_residual_norm" not in rgb_vars["params"]
  x = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3)) * 255
  logits, updates = srm.apply(srm_vars, x, train=True, mutable=["batch_stats"])
  assert logits.shape == (2, 64, 64) and np.all(np.isfinite(logits))
  # The residuals' statistics are learnt like any other BatchNorm's.
  assert (
    np.abs(np.asarray(updates["batch_stats"]["noise_residual_norm"]["bn"]["var"]) - 1).max() > 0.1
  )


def test_unknown_noise_residual_names_the_field():
  with pytest.raises(ConfigError, match="noise_residual"):
    build_model(tiny_model_config(noise_residual="bayar"))
