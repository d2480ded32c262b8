"""ops.conv2d ("matmul_grads") against jax.grad of lax.conv_general_dilated, and its model wiring.

Every case compares the value and both gradients (input and kernel, for a
random cotangent) with the plain convolution's: to float32 rounding, and to
~1e-12 in float64 (``jax.enable_x64`` inside the test). The kernel-gradient
path normally taken only by wide kernels (both channel counts >= 256) is forced
on small ones by lowering ``GEMM_KERNEL_GRAD_MIN_CHANNELS``, so every stride,
dilation and kernel size goes through it; one case uses the real threshold.
"""

from __future__ import annotations

import collections
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from sdpal_jax import checkpoint, model_config
from sdpal_jax.errors import ConfigError
from sdpal_jax.models import build_model, init_model
from sdpal_jax.models.layers import ConvBN
from sdpal_jax.ops import convolution

# (kernel, stride, dilation, height, width): odd and even sizes, torch-style padding
CASES = [
  (1, 1, 1, 9, 8),
  (1, 2, 1, 9, 8),
  (1, 2, 1, 8, 10),
  (3, 1, 1, 9, 10),
  (3, 2, 1, 9, 10),
  (3, 2, 1, 8, 8),
  (3, 1, 2, 11, 10),
  (3, 1, 4, 12, 13),
  (3, 2, 2, 11, 12),
  (3, 2, 4, 13, 14),
  (7, 1, 1, 9, 9),
  (7, 2, 1, 13, 12),
  (7, 2, 2, 16, 15),
]


def _case_id(case):
  k, s, d, h, w = case
  return f"k{k}-s{s}-d{d}-{h}x{w}"


def _reference(x, kernel, strides, padding, dilation):
  return lax.conv_general_dilated(
    x, kernel, strides, padding, rhs_dilation=dilation, dimension_numbers=convolution.NHWC
  )


def _value_and_grads(conv, x, kernel, cotangent):
  def loss(x, kernel):
    return jnp.sum(conv(x, kernel) * cotangent)

  y = conv(x, kernel)
  grads = jax.jit(jax.grad(loss, (0, 1)))(x, kernel)
  return (y, *grads)


def _errors(x, kernel, strides, padding, dilation, dtype, seed=0):
  """Max |ours - reference| / max |reference| for (y, dx, dK)."""
  rng = np.random.default_rng(seed)
  x = jnp.asarray(x, dtype)
  kernel = jnp.asarray(kernel, dtype)
  y_shape = jax.eval_shape(
    lambda a, b: _reference(a, b, strides, padding, dilation), x, kernel
  ).shape
  cotangent = jnp.asarray(rng.normal(size=y_shape), dtype)
  ours = _value_and_grads(
    lambda a, b: convolution.conv2d(
      a, b, strides=strides, padding=padding, dilation=dilation, impl="matmul_grads"
    ),
    x,
    kernel,
    cotangent,
  )
  ref = _value_and_grads(
    lambda a, b: _reference(a, b, strides, padding, dilation), x, kernel, cotangent
  )
  for a, b in zip(ours, ref, strict=True):
    assert a.shape == b.shape and a.dtype == b.dtype
  return [
    float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) for a, b in zip(ours, ref, strict=True)
  ]


def _inputs(case, channels=(3, 5), seed=0):
  k, _, _, h, w = case
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(2, h, w, channels[0]))
  kernel = rng.normal(size=(k, k, *channels))
  return x, kernel


def _torch_padding(k, d):
  p = d * (k - 1) // 2
  return ((p, p), (p, p))


def _primitives(fn, *args) -> collections.Counter:
  """How often each primitive occurs in ``fn``'s jaxpr (nested jaxprs included)."""
  counts = collections.Counter()

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      counts[eqn.primitive.name] += 1
      for value in eqn.params.values():
        for sub in value if isinstance(value, tuple | list) else (value,):
          inner = getattr(sub, "jaxpr", sub)
          if hasattr(inner, "eqns"):
            walk(inner)

  walk(jax.make_jaxpr(fn)(*args).jaxpr)
  return counts


@pytest.fixture
def gemm_for_every_kernel(monkeypatch):
  """Sends every kh x kw kernel through the matrix-product kernel gradient."""
  monkeypatch.setattr(convolution, "GEMM_KERNEL_GRAD_MIN_CHANNELS", 1)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_float32_value_and_gradients_match_plain_convolution(case, gemm_for_every_kernel):
  k, s, d, _, _ = case
  x, kernel = _inputs(case)
  errors = _errors(x, kernel, (s, s), _torch_padding(k, d), (d, d), jnp.float32)
  assert max(errors) < 2e-6, errors


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.slow
def test_float64_value_and_gradients_match_plain_convolution(case, gemm_for_every_kernel):
  k, s, d, _, _ = case
  x, kernel = _inputs(case)
  with jax.enable_x64(True):
    errors = _errors(x, kernel, (s, s), _torch_padding(k, d), (d, d), jnp.float64)
  assert max(errors) < 1e-12, errors


@pytest.mark.parametrize("padding", [((0, 2), (1, 0)), ((2, 1), (0, 3)), "SAME", "VALID"], ids=str)
def test_asymmetric_and_named_padding(padding, gemm_for_every_kernel):
  x, kernel = _inputs((3, 2, 2, 11, 10))
  errors = _errors(x, kernel, (2, 2), padding, (2, 2), jnp.float32)
  assert max(errors) < 2e-6, errors


def test_wide_kernel_takes_the_matrix_product_gradient_at_the_real_threshold():
  c = convolution.GEMM_KERNEL_GRAD_MIN_CHANNELS
  x, kernel = _inputs((3, 1, 2, 6, 5), channels=(c, c))
  x, kernel = jnp.asarray(x, jnp.float32), jnp.asarray(kernel, jnp.float32)
  counts = _primitives(
    jax.grad(lambda k: jnp.sum(convolution.conv2d(x, k, padding="SAME", dilation=2))), kernel
  )
  assert counts["dot_general"] == 9, counts  # the kernel gradient: one product per tap
  errors = _errors(x, kernel, (1, 1), "SAME", (2, 2), jnp.float32)
  assert max(errors) < 2e-6, errors


def test_narrow_kernels_keep_the_plain_convolution():
  x, kernel = jnp.ones((1, 6, 6, 8)), jnp.ones((3, 3, 8, 8))
  counts = _primitives(jax.grad(lambda k: jnp.sum(convolution.conv2d(x, k))), kernel)
  assert counts["dot_general"] == 0 and counts["conv_general_dilated"] > 0, counts


def test_pointwise_has_no_convolution_left():
  x, kernel = jnp.ones((2, 8, 8, 4)), jnp.ones((1, 1, 4, 3))
  for strides in (1, 2):
    counts = _primitives(
      jax.grad(lambda x, k, s=strides: jnp.sum(convolution.conv2d(x, k, strides=s)), (0, 1)),
      x,
      kernel,
    )
    assert counts["conv_general_dilated"] == 0 and counts["dot_general"] == 3, counts


def test_a_broken_kernel_gradient_is_caught(monkeypatch, gemm_for_every_kernel):
  """The comparison sees a wrong VJP: here the taps of dK in reverse order (a flipped kernel)."""
  right = convolution.gemm_kernel_grad

  def flipped(*args, **kwargs):
    return right(*args, **kwargs)[::-1, ::-1]

  monkeypatch.setattr(convolution, "gemm_kernel_grad", flipped)
  x, kernel = _inputs((3, 1, 2, 11, 10))
  errors = _errors(x, kernel, (1, 1), _torch_padding(3, 2), (2, 2), jnp.float32)
  assert errors[0] < 2e-6 and errors[1] < 2e-6  # value and input gradient untouched
  assert errors[2] > 0.1  # the kernel gradient is caught


def test_auto_is_matmul_grads_on_cpu_and_unknown_impls_fail():
  assert convolution.resolve_conv_impl("auto") == (
    "matmul_grads" if jax.default_backend() == "cpu" else "xla"
  )
  assert convolution.resolve_conv_impl("xla") == "xla"
  with pytest.raises(ValueError, match="conv_impl"):
    convolution.conv2d(jnp.ones((1, 4, 4, 1)), jnp.ones((1, 1, 1, 1)), impl="oneDNN")


@pytest.mark.parametrize("conv_impl", ["matmul_grads", "auto"])
def test_conv_bn_keeps_its_variables_and_values(conv_impl):
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 9, 9, 3)), jnp.float32)
  plain = ConvBN(4, 3, 2, 1, conv_impl="xla")
  ours = ConvBN(4, 3, 2, 1, conv_impl=conv_impl)
  variables = plain.init(jax.random.key(0), x, train=False)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x, train=False)) == jax.tree.map(
    jnp.shape, variables
  )
  np.testing.assert_allclose(
    ours.apply(variables, x, train=False), plain.apply(variables, x, train=False), atol=1e-5
  )


def test_flax_conv_argument_falls_back_for_other_layouts():
  """Grouped convolutions are not conv2d's: they go to lax unchanged."""
  x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 6, 6, 4)), jnp.float32)
  kw = {"features": 4, "kernel_size": (3, 3), "feature_group_count": 2}
  ours = nn.Conv(**kw, conv_general_dilated=convolution.conv_general_dilated("matmul_grads"))
  variables = nn.Conv(**kw).init(jax.random.key(0), x)
  np.testing.assert_allclose(ours.apply(variables, x), nn.Conv(**kw).apply(variables, x))


def _small_model_config(conv_impl):
  c = model_config.default_model_config()
  c.backbone_depth = 18
  c.stem_channels = 8
  c.base_channels = 8
  c.feature_channels = 16
  c.attention_heads = 2
  c.decoder_channels = (8, 8, 8, 8)
  c.conv_impl = conv_impl
  return c


@pytest.mark.slow
def test_model_parameters_and_gradients_do_not_depend_on_conv_impl(gemm_for_every_kernel):
  images = jnp.asarray(np.random.default_rng(3).uniform(0, 255, (2, 64, 64, 3)), jnp.float32)
  results = {}
  for impl in ("xla", "matmul_grads"):
    model = build_model(_small_model_config(impl))
    variables = init_model(model, jax.random.key(0), images.shape)

    def loss(params, model=model, variables=variables):
      logits, _ = model.apply(
        {"params": params, "batch_stats": variables["batch_stats"]},
        images,
        train=True,
        mutable=["batch_stats"],
      )
      return jnp.mean(jax.nn.sigmoid(logits))

    results[impl] = (variables, *jax.jit(jax.value_and_grad(loss))(variables["params"]))
  (v0, l0, g0), (v1, l1, g1) = results["xla"], results["matmul_grads"]
  assert jax.tree.structure(v0) == jax.tree.structure(v1)
  jax.tree.map(np.testing.assert_array_equal, v0, v1)  # same names, shapes, initial values
  np.testing.assert_allclose(l1, l0, rtol=1e-5)
  scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(g0))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4 * scale), g1, g0)


def test_config_field_defaults_and_validation(tmp_path):
  assert model_config.CONV_IMPLS == convolution.CONV_IMPLS
  c = model_config.default_model_config()
  assert c.conv_impl == convolution.DEFAULT_CONV_IMPL == "auto"
  c.conv_impl = "cudnn"
  with pytest.raises(ConfigError, match="conv_impl"):
    model_config.validate_model_config(c)
  # a config.json written before the field existed loads with the default
  old = model_config.default_model_config().to_dict()
  del old["conv_impl"]
  (tmp_path / checkpoint.CONFIG_FILE).write_text(json.dumps({"model": old}))
  loaded = checkpoint.read_config(str(tmp_path)).model
  assert loaded.conv_impl == "auto"
  assert build_model(loaded).conv_impl == "auto"
