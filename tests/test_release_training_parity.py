"""Training steps match the PyTorch release: optimiser, loss, BatchNorm (train mode), K steps.

Two levels:

- always (with the torch extra): small PyTorch modules written here with the
  release's conventions (conv-BN-ReLU blocks, a biased conv in front of a
  BatchNorm as DPAL's ``refine``, a biased 1x1 head, bilinear align-corners
  output; ``torch.sigmoid`` then ``nn.BCELoss``; ``torch.optim.Adam(lr=1e-4)``;
  BatchNorm in train mode) against our ``ConvBN``/``conv1x1``, ``make_loss``
  (``form="release"``), ``make_optimizer`` and ``train_step``. These networks
  are shallow, so float32 rounding stays at ~1e-7 and the tolerances are tight.
- with a release checkout (``SDPAL_RELEASE_DIR``): the release's own
  ``FakeLocator`` and loop against ours, through
  ``tools/check_release_parity.py`` (its docstring explains the measures and
  tolerances). At random init the 101-layer network with train-mode
  BatchNorm amplifies float32 rounding by orders of magnitude (the release's
  float32 gradients differ from its own float64 ones by up to ~30% in some
  tensors), so there both float32 runs are compared with the release in
  float64 and ours must be as close to it as the release's float32 run is.
"""

from __future__ import annotations

import functools
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import linen as nn

from sdpal_jax import ops, torch_import, train_state
from sdpal_jax.models.layers import BatchNorm, ConvBN, conv1x1

torch = pytest.importorskip("torch", reason="the torch extra is not installed")
pytestmark = pytest.mark.torch

TOOLS = os.path.join(os.path.dirname(__file__), "..", "tools")
sys.path.insert(0, TOOLS)
import check_release_parity  # noqa: E402

RELEASE_DIR = os.environ.get("SDPAL_RELEASE_DIR", "")
LR = check_release_parity.LEARNING_RATE


def _optimizer_config(steps: int) -> ml_collections.ConfigDict:
  """The release's optimiser and loss (Adam 1e-4, loss.form="release"), as the tool builds them."""
  return check_release_parity.release_train_config(steps)


# --- BatchNorm and the loss, layer by layer ---------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 1, 1, 4), (2, 3, 5, 4), (4, 16, 16, 4)])
def test_batchnorm_train_mode_matches_torch_outputs_and_running_statistics(shape):
  """n/(n-1) in the running variance: n = 2 values per channel doubles it (flax's would not)."""
  rng = np.random.default_rng(0)
  torch_bn = torch.nn.BatchNorm2d(shape[-1]).train()
  bn = BatchNorm()
  x0 = jnp.zeros(shape)
  variables = bn.init(jax.random.key(0), x0, train=False)
  for _ in range(3):
    x = (rng.normal(size=shape) * 3 + 50).astype(np.float32)
    y, updates = bn.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
    variables = {"params": variables["params"], **updates}
    expected = torch_bn(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    # Values ~50 +- 3 in float32: the batch mean carries ~1e-4 of summation-order rounding
    # (XLA's and torch's reductions split differently with the thread count), i.e. ~3e-5 in y.
    np.testing.assert_allclose(y, expected.detach().numpy(), rtol=1e-5, atol=1e-4)
  stats = variables["batch_stats"]["bn"]
  np.testing.assert_allclose(stats["mean"], torch_bn.running_mean.numpy(), rtol=1e-6)
  np.testing.assert_allclose(stats["var"], torch_bn.running_var.numpy(), rtol=1e-5)


def _release_loss_against_torch(logits, masks):
  """(ours, torch) loss values and gradients wrt the logits for ``loss.form="release"``."""
  t = torch.tensor(logits, requires_grad=True)
  expected = torch.nn.BCELoss()(torch.sigmoid(t), torch.from_numpy(masks))
  expected.backward()
  loss_fn = train_state.make_loss(_optimizer_config(1).loss)
  value, grad = jax.value_and_grad(loss_fn)(jnp.asarray(logits), jnp.asarray(masks))
  return (float(value), np.asarray(grad)), (expected.item(), t.grad.numpy())


def _logits_and_masks(values):
  """Every value with mask 0 and with mask 1, as ``[2, len(values), 1]`` arrays."""
  logits = np.array([values] * 2, np.float32)[:, :, None]
  masks = np.stack([np.zeros(len(values)), np.ones(len(values))]).astype(np.float32)[:, :, None]
  return logits, masks


def test_release_loss_matches_sigmoid_then_bceloss():
  """Value and gradient of ``loss.form="release"`` = ``nn.BCELoss()(torch.sigmoid(x), y)``."""
  logits, masks = _logits_and_masks([-16.0, -9.0, -3.0, -0.5, 0.0, 0.7, 4.0, 11.0, 16.0])
  (value, grad), (expected, expected_grad) = _release_loss_against_torch(logits, masks)
  np.testing.assert_allclose(value, expected, rtol=1e-6)
  np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-9)


def test_release_loss_matches_torch_at_saturated_logits():
  """Beyond |logit| ~ 16.6 float32 sigmoid rounds to exactly 0 or 1.

  Then a pixel on the wrong side costs log's clamp, 100, and has a zero
  gradient in the release (it can no longer be corrected); the logits form
  charges |logit| with gradient +-1 instead. (For 27.6 < |logit| torch's
  backward divides by max(p (1 - p), 1e-12), so its gradients there are
  below 1e-12 rather than exact; the tolerance allows for that.)
  """
  # (Not between ~-104 and ~-87: there torch's sigmoid is a float32 denormal, which XLA on
  # CPU flushes to 0, so the clamped loss differs: 100 against ~88-103.)
  logits, masks = _logits_and_masks([-120.0, -40.0, -17.0, 17.0, 20.0, 40.0, 120.0])
  (value, grad), (expected, expected_grad) = _release_loss_against_torch(logits, masks)
  np.testing.assert_allclose(value, expected, rtol=1e-6)
  np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-12)
  # Wrong side and saturated: p rounds to 1 above ~16.6; below ~-27.6 torch's eps takes over.
  saturated_wrong = ((logits >= 17) & (masks < 0.5)) | ((logits <= -40) & (masks > 0.5))
  assert np.all(np.abs(grad[saturated_wrong]) < 1e-6)
  stable = jax.grad(train_state.make_loss(ml_collections.ConfigDict({"form": "logits"})))
  assert np.all(np.asarray(stable(jnp.asarray(logits), jnp.asarray(masks)))[saturated_wrong] != 0)


# --- a small network with the release's conventions, K optimiser steps ------------------------


class TorchMini(torch.nn.Module):
  """conv-BN-ReLU (stride 2), biased conv-BN-ReLU (as DPAL's refine), biased 1x1 head, x4 up."""

  def __init__(self, out_size):
    super().__init__()
    self.out_size = out_size
    self.body = torch.nn.Sequential(
      torch.nn.Conv2d(3, 8, 3, 2, 1, bias=False),
      torch.nn.BatchNorm2d(8),
      torch.nn.ReLU(inplace=True),
      torch.nn.Conv2d(8, 8, 3, 2, 1, bias=True),
      torch.nn.BatchNorm2d(8),
      torch.nn.ReLU(inplace=True),
      torch.nn.Conv2d(8, 1, 1),
    )

  def forward(self, x):
    logits = self.body(x)
    up = torch.nn.functional.interpolate(
      logits, size=self.out_size, mode="bilinear", align_corners=True
    )
    return up.squeeze(1)


class Mini(nn.Module):
  """TorchMini in Flax with the project's layers."""

  out_size: tuple[int, int]

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = ConvBN(8, 3, 2, name="block1")(x, train)
    x = ConvBN(8, 3, 2, use_bias=True, name="block2")(x, train)
    x = conv1x1(1, use_bias=True, dtype=jnp.float32, name="head")(x)
    return ops.resize_bilinear_align_corners(x, self.out_size)[..., 0]


MINI_LAYERS = {
  "block1": ("body.0", "body.1"),
  "block2": ("body.3", "body.4"),
  "head": ("body.6", None),
}


def _mini_variables(torch_model, flax_model, x):
  state = {k: v.detach().numpy().copy() for k, v in torch_model.state_dict().items()}
  expected = jax.eval_shape(lambda: flax_model.init(jax.random.key(0), x, train=False))
  return torch_import._convert(
    state, dict(expected), lambda path: MINI_LAYERS[path[0]], source="mini"
  )


def test_small_network_takes_the_same_k_adam_steps_as_torch():
  steps, size, out = 5, 12, (16, 16)
  torch.manual_seed(0)
  torch_model = TorchMini(out)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (2, size, size, 3)).astype(np.float32)
  masks = np.zeros((2, *out), np.float32)
  masks[0, 2:9, 3:12] = 1
  masks[1, 8:, :6] = 1
  model = Mini(out)
  variables = _mini_variables(torch_model, model, jnp.asarray(images))

  optimizer = torch.optim.Adam(torch_model.parameters(), lr=LR)
  criterion = torch.nn.BCELoss()
  torch_model.train()
  x, y = torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(masks)
  torch_losses, torch_biases = [], []  # the pre-BatchNorm bias before each step
  for _ in range(steps):
    torch_biases.append(torch_model.body[3].bias.detach().numpy().copy())
    optimizer.zero_grad()
    loss = criterion(torch.sigmoid(torch_model(x)), y)
    loss.backward()
    optimizer.step()
    torch_losses.append(loss.item())

  config = _optimizer_config(steps)
  state = train_state.TrainState.create(
    apply_fn=model.apply,
    params=variables["params"],
    batch_stats=variables["batch_stats"],
    tx=train_state.make_optimizer(config),
  )
  step = jax.jit(
    functools.partial(train_state.train_step, loss_fn=train_state.make_loss(config.loss))
  )
  batch = {"image": jnp.asarray(images), "mask": jnp.asarray(masks)}
  losses, biases = [], []
  for _ in range(steps):
    biases.append(np.asarray(state.params["block2"]["conv"]["bias"]))
    state, metrics = step(state, batch, jax.random.key(0))
    losses.append(float(metrics["loss"]))

  np.testing.assert_allclose(losses, torch_losses, rtol=1e-5)
  final = _mini_variables(torch_model, model, jnp.asarray(images))
  for name in ("block1", "block2"):
    got, want = state.batch_stats[name]["norm"]["bn"], final["batch_stats"][name]["norm"]["bn"]
    got_mean, want_mean = np.asarray(got["mean"]), want["mean"]
    if name == "block2":
      # block2's running mean averages its conv's output, bias included, and that bias
      # moves by noise (below): take out each step's bias, 0.1 x 0.9^(K - k) b_{k-1}.
      weights = [0.1 * 0.9 ** (steps - k) for k in range(1, steps + 1)]
      got_mean = got_mean - sum(w * b for w, b in zip(weights, biases, strict=True))
      want_mean = want_mean - sum(w * b for w, b in zip(weights, torch_biases, strict=True))
    np.testing.assert_allclose(got_mean, want_mean, rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(got["var"], want["var"], rtol=1e-5, err_msg=name)
  initial = jax.tree.map(np.asarray, variables["params"])
  flat_ours = jax.tree_util.tree_leaves_with_path(state.params)
  flat_torch = dict(jax.tree_util.tree_leaves_with_path(final["params"]))
  flat_init = dict(jax.tree_util.tree_leaves_with_path(initial))
  for path, value in flat_ours:
    name = jax.tree_util.keystr(path)
    update_ours = np.asarray(value) - flat_init[path]
    update_torch = flat_torch[path] - flat_init[path]
    if "block2" in name and "conv" in name and "bias" in name:
      # In front of a train-mode BatchNorm: its exact gradient is 0, both sides see noise.
      assert np.abs(update_ours).max() <= steps * LR * 1.01
      continue
    np.testing.assert_allclose(update_ours / LR, update_torch / LR, atol=1e-3, err_msg=name)


# --- the release itself (SDPAL_RELEASE_DIR) ---------------------------------------------------

needs_release = pytest.mark.skipif(
  not os.path.isfile(os.path.join(RELEASE_DIR, "sdpal.py")),
  reason="set SDPAL_RELEASE_DIR to a GCLion/SDPAL checkout (git clone "
  "https://github.com/GCLion/SDPAL) to compare training steps with the release",
)


def _release_parity(size, steps):
  result = check_release_parity.train_parity(RELEASE_DIR, size=size, steps=steps, batch_size=2)
  print(check_release_parity.summary(result))
  assert not check_release_parity.tolerance_violations(result), check_release_parity.summary(result)


@needs_release
@pytest.mark.slow
def test_release_paper_network_at_64px_takes_the_same_steps():
  _release_parity(64, 3)


@needs_release
@pytest.mark.slow
def test_release_paper_network_at_256px_takes_the_same_first_step():
  _release_parity(256, 1)
