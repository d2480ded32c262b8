"""Jitted steps compile once: no recompilation across steps with the same shapes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_fixtures import save_tiny_checkpoint

from sdpal_jax import configs, train_state
from sdpal_jax.inference import Predictor
from sdpal_jax.models import build_model

pytestmark = pytest.mark.slow  # each test compiles the tiny network several times: 30-50 s


def _count_compilations(fn):
  """Runs ``fn`` and returns how many XLA compilations it triggered."""
  count = 0

  def listener(event, *args, **kwargs):
    nonlocal count
    if event == "/jax/core/compile/backend_compile_duration":
      count += 1

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    fn()
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  return count


def test_train_step_compiles_once_for_many_steps():
  config = configs.load("tiny")
  config.loss.dice_weight = 0.5
  state = train_state.create_train_state(config, build_model(config.model), jax.random.key(0))
  loss_fn = train_state.make_loss(config.loss)
  step = jax.jit(functools.partial(train_state.train_step, loss_fn=loss_fn), donate_argnums=(0,))
  rng = np.random.default_rng(0)
  holder = {"state": state}

  def run(steps):
    for _ in range(steps):
      batch = {
        "image": jnp.asarray(rng.normal(size=(2, 64, 64, 3)), jnp.float32),
        "mask": jnp.asarray(rng.random((2, 64, 64)) > 0.8, jnp.float32),
      }
      holder["state"], metrics = step(holder["state"], batch, jax.random.key(1))
    jax.block_until_ready(metrics)

  assert _count_compilations(lambda: run(1)) >= 1  # the listener sees the first compilation
  assert _count_compilations(lambda: run(4)) == 0


def test_predictor_compiles_once_then_reuses_it_for_any_photo_size(tmp_path):
  path = save_tiny_checkpoint(tmp_path)
  predictor = Predictor.from_checkpoint(path)  # resizes every photo to the checkpoint's 64x64
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (2, 80, 96, 3), dtype=np.uint8)
  assert _count_compilations(lambda: predictor.predict_probabilities(images)) >= 1
  other = rng.integers(0, 256, (2, 72, 72, 3), dtype=np.uint8)
  again = _count_compilations(
    lambda: [predictor.predict_probabilities(x) for x in (images, other, images)]
  )
  assert again == 0


def test_full_resolution_predictor_compiles_once_per_new_size(tmp_path):
  predictor = Predictor.from_checkpoint(save_tiny_checkpoint(tmp_path), full_resolution=True)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (1, 64, 80, 3), dtype=np.uint8)
  assert _count_compilations(lambda: predictor.predict_probabilities(images)) >= 1
  assert _count_compilations(lambda: predictor.predict_probabilities(images)) == 0
  other = rng.integers(0, 256, (1, 72, 72, 3), dtype=np.uint8)
  assert _count_compilations(lambda: predictor.predict_probabilities(other)) >= 1
