"""``model.init``: "pytorch" draws what untouched torch layers hold; "flax" keeps flax's defaults."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from flax import traverse_util
from model_fixtures import tiny_model_config

from sdpal_jax import configs
from sdpal_jax.errors import ConfigError
from sdpal_jax.models import build_model, init_model
from sdpal_jax.models.layers import torch_bias_init, torch_kernel_init


@pytest.fixture(scope="module")
def tiny_pytorch_init():
  model = build_model(tiny_model_config(init="pytorch"))
  return traverse_util.flatten_dict(init_model(model, jax.random.key(0), (1, 64, 64, 3)))


@pytest.fixture(scope="module")
def tiny_flax_init():
  model = build_model(tiny_model_config(init="flax"))
  return traverse_util.flatten_dict(init_model(model, jax.random.key(0), (1, 64, 64, 3)))


@pytest.mark.slow
def test_every_conv_is_uniform_within_one_over_sqrt_fan_in(tiny_pytorch_init):
  kernels = {k: v for k, v in tiny_pytorch_init.items() if k[-1] == "kernel"}
  assert len(kernels) > 40
  for key, kernel in kernels.items():
    kernel = np.asarray(kernel)
    fan_in = math.prod(kernel.shape[:-1])  # HWIO: kernel area x input channels
    bound = 1 / math.sqrt(fan_in)
    assert np.abs(kernel).max() <= bound, key
    if kernel.size >= 20_000:  # a large layer: the extremes and the spread are those of U(±b)
      assert np.abs(kernel).max() > 0.99 * bound, key
      assert abs(kernel.std() / (bound / math.sqrt(3)) - 1) < 0.03, key
    bias_key = (*key[:-1], "bias")
    if bias_key in tiny_pytorch_init:
      bias = np.asarray(tiny_pytorch_init[bias_key])
      assert np.abs(bias).max() <= bound and np.any(bias != 0), bias_key


@pytest.mark.slow
def test_batchnorm_starts_at_identity_under_both_inits(tiny_pytorch_init, tiny_flax_init):
  for variables in (tiny_pytorch_init, tiny_flax_init):
    for key, value in variables.items():
      if "bn" in key:
        expected = {"scale": 1.0, "bias": 0.0, "mean": 0.0, "var": 1.0}[key[-1]]
        np.testing.assert_array_equal(value, expected)


@pytest.mark.slow
def test_flax_init_keeps_lecun_normal_kernels_and_zero_biases(tiny_flax_init):
  variables = tiny_flax_init
  outc = variables[("params", "decoder", "outc", "bias")]
  np.testing.assert_array_equal(outc, 0.0)
  kernel = np.asarray(variables[("params", "mopc", "fusion", "conv", "kernel")])
  # LeCun normal: truncated normal with variance 1 / fan_in (not torch's 1 / (3 fan_in)).
  assert abs(kernel.std() * math.sqrt(math.prod(kernel.shape[:-1])) - 1) < 0.05


# The release's layer shapes (torch OIHW): its MOPC fusion, its largest conv, DPAL's
# projections, the decoder's first conv and its 1x1 output conv (the only biased conv here).
RELEASE_SHAPES = [(512, 1536, 3, 3), (512, 2048, 3, 3), (512, 512, 1, 1), (64, 512, 3, 3)]


@pytest.mark.torch
@pytest.mark.parametrize("shape", RELEASE_SHAPES)
def test_kernels_have_the_statistics_of_torch_conv2d_defaults(shape):
  torch = pytest.importorskip("torch", reason="the torch extra is not installed")
  torch.manual_seed(0)
  out_c, in_c, kh, kw = shape
  reference = torch.nn.Conv2d(in_c, out_c, (kh, kw), bias=False).weight.detach().numpy()
  ours = np.asarray(torch_kernel_init(jax.random.key(0), (kh, kw, in_c, out_c)))
  bound = 1 / math.sqrt(in_c * kh * kw)
  assert np.abs(ours).max() <= bound and np.abs(reference).max() <= bound
  assert np.abs(ours).max() > 0.999 * bound and np.abs(reference).max() > 0.999 * bound
  assert abs(ours.std() / reference.std() - 1) < 0.01
  assert abs(ours.mean() - reference.mean()) < 0.01 * bound


@pytest.mark.torch
def test_biases_have_the_statistics_of_torch_conv2d_defaults():
  torch = pytest.importorskip("torch", reason="the torch extra is not installed")
  torch.manual_seed(0)
  layers = [torch.nn.Conv2d(64, 1, 1) for _ in range(2000)]  # the release's outc, 2000 times
  reference = np.concatenate([layer.bias.detach().numpy() for layer in layers])
  ours = np.asarray(torch_bias_init(64)(jax.random.key(0), (2000,)))
  bound = 1 / 8
  assert np.abs(ours).max() <= bound and np.abs(reference).max() <= bound
  assert abs(ours.std() / reference.std() - 1) < 0.06  # 2000 draws: ~1.6% standard error


def test_paper_configs_use_the_pytorch_init_and_a_bad_value_is_named():
  for name in ("casia_v2", "fantastic_reality", "imd2020", "tampcoco"):
    assert configs.load(name).model.init == "pytorch", name
  with pytest.raises(ConfigError, match="model.init='nope'"):
    build_model(tiny_model_config(init="nope"))
