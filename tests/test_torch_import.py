"""PyTorch -> Flax conversion, pinned layer kind by layer kind against torch's own layers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from model_fixtures import tiny_model_config

from sdpal_jax import ops, torch_import
from sdpal_jax.errors import CheckpointError
from sdpal_jax.models import DPAL, build_model
from sdpal_jax.models.layers import ConvBN

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch", reason="the torch extra is not installed")
from torch_release_layout import DiffAttention, ReleaseLayout, randomised_state_dict  # noqa: E402
from torch_release_layout import ResNet as TorchResNet  # noqa: E402

F = torch.nn.functional


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
  """torch on one thread here, given back afterwards: the thread count changes torch's
  summation order, and a later file in the same worker (test_release_training_parity)
  compares Adam updates of near-zero gradients, which amplify that order."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


def _nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def _nhwc(t):
  return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


def _randomise_bn(bn, rng):
  with torch.no_grad():
    bn.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, bn.num_features).astype(np.float32)))
    bn.bias.copy_(torch.from_numpy(rng.normal(size=bn.num_features).astype(np.float32)))
    bn.running_mean.copy_(torch.from_numpy(rng.normal(size=bn.num_features).astype(np.float32)))
    bn.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2, bn.num_features).astype(np.float32)))


def _state(module):
  return {k: v.detach().numpy() for k, v in module.state_dict().items()}


@pytest.mark.parametrize(
  "kernel,stride,dilation,size",
  [(3, 2, 1, (17, 12)), (3, 1, 2, (9, 11)), (1, 2, 1, (7, 8)), (7, 2, 1, (15, 10))],
)
def test_conv_bn_matches_torch(kernel, stride, dilation, size):
  rng = np.random.default_rng(0)
  torch_layer = torch.nn.Sequential(
    torch.nn.Conv2d(3, 8, kernel, stride, dilation * (kernel - 1) // 2, dilation, bias=False),
    torch.nn.BatchNorm2d(8),
  ).eval()
  _randomise_bn(torch_layer[1], rng)
  layer = ConvBN(8, kernel, stride, dilation, relu=False)
  x = rng.normal(size=(2, *size, 3)).astype(np.float32)
  expected = jax.eval_shape(lambda: layer.init(jax.random.key(0), jnp.asarray(x), train=False))
  variables = torch_import._convert(
    _state(torch_layer), dict(expected), lambda path: ("0", "1"), source="test"
  )
  got = layer.apply(variables, jnp.asarray(x), train=False)
  np.testing.assert_allclose(got, _nhwc(torch_layer(_nchw(x))), atol=1e-4)


def test_max_pool_matches_torch():
  x = np.random.default_rng(1).normal(size=(1, 9, 12, 4)).astype(np.float32)
  import flax.linen as nn

  got = nn.max_pool(jnp.asarray(x), (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
  expected = _nhwc(torch.nn.MaxPool2d(3, 2, 1)(_nchw(x)))
  np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize(
  "in_size,out_size", [((16, 16), (32, 32)), ((32, 32), (16, 16)), ((5, 7), (64, 48))]
)
def test_bilinear_align_corners_matches_torch(in_size, out_size):
  x = np.random.default_rng(2).normal(size=(2, *in_size, 3)).astype(np.float32)
  expected = _nhwc(F.interpolate(_nchw(x), size=out_size, mode="bilinear", align_corners=True))
  np.testing.assert_allclose(
    ops.resize_bilinear_align_corners(jnp.asarray(x), out_size), expected, atol=1e-5
  )


def test_neighbour_pixel_residual_matches_torch_scale_factor_resizes():
  x = np.random.default_rng(3).normal(size=(1, 32, 32, 6)).astype(np.float32)
  t = _nchw(x)
  kw = {"mode": "bilinear", "recompute_scale_factor": True, "align_corners": True}
  blurred = F.interpolate(F.interpolate(t, scale_factor=0.5, **kw), scale_factor=2.0, **kw)
  np.testing.assert_allclose(
    ops.neighbour_pixel_residual(jnp.asarray(x)), _nhwc(t - blurred), atol=1e-5
  )


class TorchDifferentialAttention(DiffAttention):
  """DPAL as the release's ``sdpal.py`` has it (``DiffAttention2D`` then ``ConvRefine``).

  Two softmax maps subtracted, ``unify``, then ``refine``; both residual.
  """

  def __init__(self, channels, heads):
    super().__init__(channels, heads)
    self.refine = torch.nn.Sequential(
      torch.nn.Conv2d(channels, channels, 3, padding=1),
      torch.nn.BatchNorm2d(channels),
      torch.nn.ReLU(),
      torch.nn.Conv2d(channels, channels, 3, padding=1),
      torch.nn.BatchNorm2d(channels),
      torch.nn.ReLU(),
    )

  def forward(self, x):
    x = super().forward(x)
    return self.refine(x) + x


def test_dpal_block_matches_torch_with_release_key_names():
  rng = np.random.default_rng(4)
  torch_block = TorchDifferentialAttention(16, 4).eval()
  _randomise_bn(torch_block.refine[1], rng)
  _randomise_bn(torch_block.refine[4], rng)
  state = {
    (f"conv_refine.{k}" if k.startswith("refine.") else f"diff_attn.{k}"): v
    for k, v in _state(torch_block).items()
  }
  block = DPAL(num_heads=4)
  x = rng.normal(size=(2, 5, 6, 16)).astype(np.float32)
  expected = jax.eval_shape(lambda: block.init(jax.random.key(0), jnp.asarray(x), train=False))
  variables = torch_import._convert(
    state, dict(expected), lambda path: torch_import._release_layer(("dpal", *path)), source="test"
  )
  got = block.apply(variables, jnp.asarray(x), train=False)
  np.testing.assert_allclose(got, _nhwc(torch_block(_nchw(x))), atol=1e-4)


@pytest.fixture(scope="module")
def release_layout():
  """A torch network in the release's layout (tiny widths) and its randomised state dict."""
  config = tiny_model_config()
  network = ReleaseLayout(config).eval()
  return config, network, randomised_state_dict(network, seed=5)


@pytest.mark.slow
def test_release_state_dict_converts_key_for_key_and_predicts_like_the_torch_network(
  release_layout,
):
  """The keys come from torch's own ``state_dict()`` of a network built in the release's
  layout: conversion must use every one of its tensors once (except the release's unused
  ``mscc.decoder`` and ``num_batches_tracked``), and the converted model must compute what
  the torch network computes."""
  config, network, state = release_layout
  assert "mscc.backbone_net.stem.3.weight" in state
  assert "unet.down2.maxpool_conv.1.double_conv.4.running_var" in state
  assert "mscc.decoder.0.weight" in state and "fuse_conv.1.num_batches_tracked" in state
  variables = torch_import.convert_release_state_dict(state, config)
  by_bytes = {np.ascontiguousarray(v).tobytes(): k for k, v in state.items() if v.ndim}
  used = []
  for path, value in traverse_util.flatten_dict(variables).items():
    value = np.asarray(value)
    torch_layout = np.transpose(value, (3, 2, 0, 1)) if value.ndim == 4 else value
    key = by_bytes.get(np.ascontiguousarray(torch_layout).tobytes())
    assert key is not None, f"{'/'.join(path)} holds no tensor of the file"
    used.append(key)
  expected = {
    k for k in state if not k.startswith("mscc.decoder.") and not k.endswith("num_batches_tracked")
  }
  assert sorted(used) == sorted(expected)  # each tensor used exactly once
  images = np.random.default_rng(6).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
  with torch.no_grad():
    want = network(_nchw(images), (64, 64)).numpy()
  got = np.asarray(build_model(config).apply(variables, jnp.asarray(images), train=False))
  assert np.abs(want).max() > 1e-2  # a non-trivial map
  np.testing.assert_allclose(got, want, atol=1e-3 * np.abs(want).max())


def test_unknown_missing_and_misshaped_keys_are_listed_together(release_layout):
  config, _, state = release_layout
  state = dict(state)
  state["extra.layer.weight"] = np.zeros(3, np.float32)
  del state["fuse_conv.0.weight"]
  state["unet.outc.conv.bias"] = np.zeros(2, np.float32)
  with pytest.raises(CheckpointError) as err:
    torch_import.convert_release_state_dict(state, config, source="bad.pth")
  message = str(err.value)
  assert "bad.pth" in message
  assert "missing (1): fuse_conv.0.weight" in message
  assert "unknown (1): extra.layer.weight" in message
  assert "mis-shaped (1): unet.outc.conv.bias" in message


@pytest.mark.parametrize("deep_stem,prefix", [(False, ""), (True, "backbone.")])
def test_imagenet_resnet_files_convert_and_merge_into_the_model(deep_stem, prefix):
  """A torchvision-layout (``conv1``/``bn1``) or mmcls-v1c-layout (``backbone.stem.*``) ResNet-18
  built in torch: its state dict converts, and the converted backbone computes torch's four
  stage outputs (output stride 32, as ImageNet trained it)."""
  from sdpal_jax.models import ResNet

  network = TorchResNet(18, deep_stem, strides=(1, 2, 2, 2), dilations=(1, 1, 1, 1)).eval()
  state = {prefix + k: v for k, v in randomised_state_dict(network, seed=7).items()}
  state[prefix + ("head.fc.weight" if prefix else "fc.weight")] = np.zeros((10, 512), np.float32)
  if not deep_stem:
    assert "conv1.weight" in state and "layer4.1.bn2.running_mean" in state
  backbone = torch_import.convert_resnet_state_dict(state, depth=18, deep_stem=deep_stem)
  images = np.random.default_rng(8).normal(size=(2, 64, 64, 3)).astype(np.float32)
  with torch.no_grad():
    want = [t.numpy() for t in network(_nchw(images))]
  got = ResNet(18, deep_stem, output_stride=32).apply(backbone, jnp.asarray(images), train=False)
  for stage, (a, b) in enumerate(zip(got, want, strict=True)):
    np.testing.assert_allclose(
      np.asarray(a), np.transpose(b, (0, 2, 3, 1)), atol=1e-4 * np.abs(b).max(), err_msg=stage
    )
  model = build_model(tiny_model_config(deep_stem=deep_stem))
  variables = jax.eval_shape(
    lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)
  )
  variables = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), dict(variables))
  merged = torch_import.merge_backbone_variables(variables, backbone)
  np.testing.assert_array_equal(
    merged["params"]["backbone"]["layer1_0"]["conv1"]["conv"]["kernel"],
    np.transpose(state[prefix + "layer1.0.conv1.weight"], (2, 3, 1, 0)),
  )


def test_weights_only_loading_refuses_pickled_objects(tmp_path):
  path = tmp_path / "evil.pth"
  torch.save({"weight": torch.zeros(2), "payload": _Payload()}, path)
  with pytest.raises(CheckpointError, match="evil.pth"):
    torch_import.load_torch_state_dict(str(path))


def test_state_dict_wrappers_and_module_prefix_are_unwrapped(tmp_path):
  path = tmp_path / "wrapped.pth"
  torch.save({"state_dict": {"module.a.weight": torch.ones(2)}}, path)
  assert list(torch_import.load_torch_state_dict(str(path))) == ["a.weight"]


class _Payload:
  """An arbitrary object: torch.load(weights_only=True) must not unpickle it."""
