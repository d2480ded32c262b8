"""Gradient accumulation (config.optimizer.accumulation_steps, optax.MultiSteps).

What is equal: for a loss that is a mean over examples and a network without
batch statistics, k micro-batches of size B give exactly the update of one
batch of size k*B (the mean of k equal-sized means is the big batch's mean).
BatchNorm is excluded on purpose: it normalises each micro-batch by its own
statistics, so its forward pass, and hence its gradients, differ.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sdpal_jax import train_state
from sdpal_jax.configs import common
from sdpal_jax.errors import ConfigError


def _config(k, *, schedule="constant", warmup=0, grad_clip=0.0, weight_decay=0.0, steps=100):
  config = common.base_config()
  config.optimizer.accumulation_steps = k
  config.optimizer.schedule = schedule
  config.optimizer.warmup_steps = warmup
  config.optimizer.grad_clip = grad_clip
  config.optimizer.weight_decay = weight_decay
  config.optimizer.learning_rate = 1e-2
  config.num_train_steps = steps
  return config


def _loss(params, x, y):
  """A BN-free two-layer network, mean squared error over the batch."""
  hidden = jnp.tanh(x @ params["w1"] + params["b1"])
  return jnp.mean((hidden @ params["w2"] - y) ** 2)


def _data(num, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(num, 5)).astype(np.float32)
  y = rng.normal(size=(num, 1)).astype(np.float32)
  return x, y


def _params():
  rng = np.random.default_rng(1)
  return {
    "w1": jnp.asarray(rng.normal(size=(5, 8)), jnp.float32),
    "b1": jnp.zeros(8, jnp.float32),
    "w2": jnp.asarray(rng.normal(size=(8, 1)), jnp.float32),
  }


def _run(tx, params, batches):
  state = tx.init(params)
  grad = jax.jit(jax.grad(_loss))
  for x, y in batches:
    updates, state = tx.update(grad(params, x, y), state, params)
    params = optax.apply_updates(params, updates)
  return params


@pytest.mark.parametrize(
  "options",
  [
    {},
    pytest.param({"grad_clip": 0.5}, marks=pytest.mark.slow),
    pytest.param({"weight_decay": 1e-2}, marks=pytest.mark.slow),
  ],
)
def test_k_micro_batches_equal_one_batch_k_times_as_large(options):
  k, micro, updates = 4, 3, 3
  x, y = _data(k * micro * updates)
  big_batches = [
    (x[i * k * micro : (i + 1) * k * micro], y[i * k * micro : (i + 1) * k * micro])
    for i in range(updates)
  ]
  micro_batches = [(x[i * micro : (i + 1) * micro], y[i * micro : (i + 1) * micro]) for i in range(k * updates)]  # fmt: skip
  big = _run(train_state.make_optimizer(_config(1, **options)), _params(), big_batches)
  accumulated = _run(train_state.make_optimizer(_config(k, **options)), _params(), micro_batches)
  for name in big:
    np.testing.assert_allclose(accumulated[name], big[name], rtol=2e-5, atol=2e-6)


def test_parameters_change_only_every_k_micro_batches():
  k = 3
  tx = train_state.make_optimizer(_config(k))
  params = _params()
  state = tx.init(params)
  x, y = _data(2 * k)
  changed = []
  for i in range(2 * k):
    grads = jax.grad(_loss)(params, x[i : i + 1], y[i : i + 1])
    updates, state = tx.update(grads, state, params)
    new = optax.apply_updates(params, updates)
    changed.append(bool(any(np.any(new[n] != params[n]) for n in params)))
    params = new
  assert changed == [False, False, True, False, False, True]


@pytest.mark.slow
def test_learning_rate_schedule_counts_micro_batches_and_changes_once_per_update():
  """Adam's step under a constant gradient is exactly the learning rate (up to eps).

  So the size of each update reads off the learning rate it used: the update
  ending at micro-step n*k + k - 1 uses the schedule's value at micro-step n*k.
  """
  k, num_updates = 4, 6
  config = _config(k, schedule="warmup_cosine", warmup=8, steps=k * num_updates)
  schedule = train_state.learning_rate_schedule(config)
  tx = train_state.make_optimizer(config)
  params = {"w": jnp.zeros(3, jnp.float32)}
  grads = {"w": jnp.ones(3, jnp.float32)}  # the gradient of sum(w): constant
  state = tx.init(params)
  steps = []
  for micro_step in range(k * num_updates):
    updates, state = tx.update(grads, state, params)
    new = optax.apply_updates(params, updates)
    if micro_step % k == k - 1:
      steps.append(float(params["w"][0] - new["w"][0]))
    else:
      assert np.all(new["w"] == params["w"])
    params = new
  expected = [float(schedule(n * k)) for n in range(num_updates)]
  np.testing.assert_allclose(steps, expected, rtol=1e-5, atol=1e-9)
  assert expected[0] == 0.0 and expected[2] == pytest.approx(1e-2)  # warmup over 8 micro-steps


def test_default_is_one_and_bad_values_are_refused():
  config = common.base_config()
  assert config.optimizer.accumulation_steps == 1
  params = _params()
  assert not isinstance(train_state.make_optimizer(config).init(params), optax.MultiStepsState)
  assert isinstance(train_state.make_optimizer(_config(2)).init(params), optax.MultiStepsState)
  for bad in (0, -2):
    config = _config(1)
    config.optimizer.accumulation_steps = bad
    with pytest.raises(ConfigError, match="accumulation_steps"):
      train_state.make_optimizer(config)
