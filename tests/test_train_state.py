"""The training step's pieces against hand formulas: loss values, schedules, Adam/AdamW, clipping."""

from __future__ import annotations

import math

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from sdpal_jax import configs, train_state
from sdpal_jax.errors import ConfigError

# --- loss ------------------------------------------------------------------------------------


def _logits_and_masks(seed=0, shape=(2, 6, 7), scale=3.0):
  rng = np.random.default_rng(seed)
  logits = (rng.normal(size=shape) * scale).astype(np.float32)
  masks = (rng.random(shape) < 0.3).astype(np.float32)
  return logits, masks


def _numpy_bce(logits, masks):
  """-(y log s + (1 - y) log(1 - s)), s = 1 / (1 + exp(-x)), in float64."""
  x = logits.astype(np.float64)
  s = 1.0 / (1.0 + np.exp(-x))
  return -(masks * np.log(s) + (1.0 - masks) * np.log(1.0 - s))


def _loss(**fields):
  return train_state.make_loss(ml_collections.ConfigDict(fields))


def test_default_loss_is_the_mean_binary_cross_entropy():
  logits, masks = _logits_and_masks()
  got = float(_loss()(jnp.asarray(logits), jnp.asarray(masks)))
  assert got == pytest.approx(_numpy_bce(logits, masks).mean(), rel=1e-5)
  # A hand-computed value: logit 0 is p = 1/2 whatever the label, so log 2 per pixel.
  zero = float(_loss()(jnp.zeros((1, 2, 2)), jnp.asarray([[[1.0, 0.0], [0.0, 1.0]]])))
  assert zero == pytest.approx(math.log(2), rel=1e-6)


def test_positive_weight_multiplies_the_tampered_pixels_terms():
  logits, masks = _logits_and_masks(1)
  per_pixel = _numpy_bce(logits, masks)
  expected = (per_pixel * np.where(masks == 1, 4.0, 1.0)).mean()
  got = float(_loss(positive_weight=4.0)(jnp.asarray(logits), jnp.asarray(masks)))
  assert got == pytest.approx(expected, rel=1e-5)


def test_dice_weight_adds_one_minus_soft_dice():
  logits, masks = _logits_and_masks(2)
  probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
  dice = (2 * (probs * masks).sum() + 1e-6) / (probs.sum() + masks.sum() + 1e-6)
  expected = _numpy_bce(logits, masks).mean() + 0.5 * (1 - dice)
  got = float(_loss(dice_weight=0.5)(jnp.asarray(logits), jnp.asarray(masks)))
  assert got == pytest.approx(expected, rel=1e-5)
  # Perfect, confident predictions: BCE ~ 0 and Dice ~ 1, so the loss is ~ 0.
  perfect = float(_loss(dice_weight=1.0)(jnp.asarray(masks * 40 - 20), jnp.asarray(masks)))
  assert perfect < 1e-6


def test_release_form_equals_the_logits_form_for_moderate_logits_and_saturates_at_100():
  logits, masks = _logits_and_masks(3)
  release = float(_loss(form="release")(jnp.asarray(logits), jnp.asarray(masks)))
  assert release == pytest.approx(_numpy_bce(logits, masks).mean(), rel=1e-4)
  # Sigmoid(40) rounds to 1 in float32: torch's BCELoss clamps log(0) at -100.
  wrong = jnp.asarray([[[40.0]]])
  assert float(_loss(form="release")(wrong, jnp.zeros((1, 1, 1)))) == pytest.approx(100.0)
  assert float(_loss(form="logits")(wrong, jnp.zeros((1, 1, 1)))) == pytest.approx(40.0, rel=1e-6)


@pytest.mark.torch
def test_loss_forms_match_torch():
  torch = pytest.importorskip("torch", reason="the torch extra is not installed")
  logits, masks = _logits_and_masks(4, scale=12.0)  # some |logit| > 16: the forms part there
  logits[0, 0, :3] = [30.0, -30.0, 60.0]
  masks[0, 0, :3] = [0.0, 1.0, 1.0]
  t_logits, t_masks = torch.from_numpy(logits), torch.from_numpy(masks)
  release = torch.nn.BCELoss()(torch.sigmoid(t_logits), t_masks).item()
  assert float(_loss(form="release")(jnp.asarray(logits), jnp.asarray(masks))) == pytest.approx(
    release, rel=1e-5
  )
  weighted = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(2.5))(t_logits, t_masks).item()
  got = float(_loss(positive_weight=2.5)(jnp.asarray(logits), jnp.asarray(masks)))
  assert got == pytest.approx(weighted, rel=1e-5)


def test_bad_loss_fields_are_named():
  with pytest.raises(ConfigError, match="loss.form='sigmoid'"):
    _loss(form="sigmoid")
  with pytest.raises(ConfigError, match="loss.positive_weight=0.0"):
    _loss(positive_weight=0.0)
  with pytest.raises(ConfigError, match="loss.dice_weight=-1.0"):
    _loss(dice_weight=-1.0)


# --- learning-rate schedules -----------------------------------------------------------------


def _config(schedule="constant", lr=0.1, steps=100, warmup=0, weight_decay=0.0, grad_clip=0.0):
  c = configs.load("tiny")
  c.num_train_steps = steps
  c.optimizer.learning_rate = lr
  c.optimizer.schedule = schedule
  c.optimizer.warmup_steps = warmup
  c.optimizer.weight_decay = weight_decay
  c.optimizer.grad_clip = grad_clip
  return c


def test_constant_schedule():
  schedule = train_state.learning_rate_schedule(_config("constant", lr=3e-4))
  for step in (0, 1, 50, 10_000):
    assert float(schedule(step)) == pytest.approx(3e-4, rel=1e-6)


def test_cosine_schedule_is_half_a_cosine_from_lr_to_zero():
  schedule = train_state.learning_rate_schedule(_config("cosine", lr=0.2, steps=100))
  for step, expected in [(0, 0.2), (25, 0.1 * (1 + math.cos(math.pi / 4))), (50, 0.1), (100, 0.0)]:
    assert float(schedule(step)) == pytest.approx(expected, abs=1e-7), step
  assert float(schedule(150)) == pytest.approx(0.0, abs=1e-7)  # stays at 0 past the end


def test_warmup_cosine_rises_linearly_then_decays_over_the_remaining_steps():
  schedule = train_state.learning_rate_schedule(
    _config("warmup_cosine", lr=0.2, steps=110, warmup=10)
  )
  hand = {
    0: 0.0,
    5: 0.2 * 5 / 10,
    10: 0.2,
    # after the warm-up: 0.2 * (1 + cos(pi * (t - 10) / 100)) / 2
    35: 0.1 * (1 + math.cos(math.pi * 25 / 100)),
    60: 0.1,
    110: 0.0,
  }
  for step, expected in hand.items():
    assert float(schedule(step)) == pytest.approx(expected, abs=1e-7), step


def test_unknown_schedule_is_named():
  with pytest.raises(ConfigError, match="optimizer.schedule='linear'"):
    train_state.learning_rate_schedule(_config("linear"))


# --- optimiser -------------------------------------------------------------------------------


def _run_optimizer(config, params, grads_per_step):
  tx = train_state.make_optimizer(config)
  state = tx.init(params)
  history = [params]
  for grads in grads_per_step:
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    history.append(params)
  return history


def _numpy_adam(params, grads_per_step, lrs, *, weight_decay=0.0, clip=0.0):
  """Adam (b1 0.9, b2 0.999, eps 1e-8 outside the root), bias-corrected; AdamW's decoupled
  decay ``lr * wd * p``; clipping scales g by clip / max(||g||, clip) over all leaves."""
  b1, b2, eps = 0.9, 0.999, 1e-8
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  v = {k: np.zeros_like(x) for k, x in p.items()}
  history = [dict(p)]
  for t, (grads, lr) in enumerate(zip(grads_per_step, lrs, strict=True), start=1):
    g = {k: np.asarray(x, np.float64) for k, x in grads.items()}
    if clip:
      norm = math.sqrt(sum(float((x**2).sum()) for x in g.values()))
      g = {k: x * clip / max(norm, clip) for k, x in g.items()}
    new = {}
    for k in p:
      m[k] = b1 * m[k] + (1 - b1) * g[k]
      v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
      m_hat, v_hat = m[k] / (1 - b1**t), v[k] / (1 - b2**t)
      new[k] = p[k] - lr * (m_hat / (np.sqrt(v_hat) + eps) + weight_decay * p[k])
    p = new
    history.append(dict(p))
  return history


PARAMS = {"w": np.asarray([1.0, -2.0, 3.0], np.float32), "b": np.asarray([0.5], np.float32)}
# Step 1's gradient has norm 13 (clipped to 1 by grad_clip=1), step 2's has norm 0.3 (not
# clipped): after clipping the second step's Adam update depends on the ratio of the two.
GRADS = [
  {"w": np.asarray([3.0, -4.0, 12.0], np.float32), "b": np.asarray([0.0], np.float32)},
  {"w": np.asarray([0.1, 0.2, -0.2], np.float32), "b": np.asarray([0.1], np.float32)},
]


@pytest.mark.parametrize(
  "weight_decay,clip", [(0.0, 0.0), (0.1, 0.0), (0.0, 1.0), (0.1, 1.0)], ids=str
)
def test_optimizer_equals_hand_adam_with_its_decay_and_clipping(weight_decay, clip):
  config = _config("constant", lr=0.01, weight_decay=weight_decay, grad_clip=clip)
  got = _run_optimizer(config, PARAMS, GRADS)
  expected = _numpy_adam(PARAMS, GRADS, [0.01, 0.01], weight_decay=weight_decay, clip=clip)
  for step in (1, 2):
    for key in PARAMS:
      np.testing.assert_allclose(got[step][key], expected[step][key], rtol=1e-6, atol=1e-7)
  # The options change the result: each run differs from plain Adam.
  if weight_decay or clip:
    plain = _numpy_adam(PARAMS, GRADS, [0.01, 0.01])
    assert not np.allclose(got[2]["w"], plain[2]["w"], rtol=1e-4, atol=1e-6)


def test_optimizer_follows_the_learning_rate_schedule():
  """A constant gradient makes Adam's step lr(t) * g / (|g| + eps): the schedule itself."""
  config = _config("warmup_cosine", lr=0.2, steps=30, warmup=10)
  grads = [{"w": np.ones(3, np.float32), "b": np.ones(1, np.float32)}] * 30
  zeros = {k: np.zeros_like(v) for k, v in PARAMS.items()}  # small values: fine float32 steps
  history = _run_optimizer(config, zeros, grads)
  schedule = train_state.learning_rate_schedule(config)
  for t in (0, 3, 10, 20, 29):
    step = np.asarray(history[t]["w"]) - np.asarray(history[t + 1]["w"])
    np.testing.assert_allclose(step, float(schedule(t)) / (1 + 1e-8), rtol=1e-4, atol=1e-8)
  assert float(schedule(3)) == pytest.approx(0.2 * 3 / 10)  # ... which is the hand formula
