"""Short training runs with plain SGD, to compare device/process layouts by their parameter updates.

Adam moves every weight by about ``lr`` whatever its gradient's size and flips the sign of
the update wherever float noise flips a small gradient, so two runs that differ only in
rounding end ~20% apart after two Adam steps, and a wrong gradient hides in that noise. With
SGD the update is ``-lr x gradient``: rounding leaves the runs ~0.5% apart, while a device or
process whose gradient is lost moves them by ~10% or more. The optimiser is swapped inside
these runs only; everything else is ``sdpal_jax.train.train_and_evaluate``.
"""

from __future__ import annotations

import glob
import os

import jax
import numpy as np

SGD_LEARNING_RATE = 0.05
NUM_STEPS = 2
# Relative size of the difference between two layouts' updates: rounding gives ~0.4% for the
# parameters and ~0.1% for the BatchNorm statistics; losing one of 8 devices' gradients ~10%+.
PARAMS_TOLERANCE = 0.03
STATS_TOLERANCE = 0.01


def _flat(tree) -> np.ndarray:
  return np.concatenate(
    [np.ravel(np.asarray(x, np.float64)) for x in jax.tree_util.tree_leaves(tree)]
  )


def sgd_config(config):
  """``config`` for a 2-step run logged every step (the learning rate is SGD's)."""
  config.num_train_steps = NUM_STEPS
  config.log_every_steps = 1
  config.optimizer.learning_rate = SGD_LEARNING_RATE
  return config


def train_with_sgd(config, workdir: str) -> dict[str, np.ndarray]:
  """Runs ``train_and_evaluate`` with SGD in place of Adam, moving the parameters at the first
  step only; returns flat parameters, BatchNorm statistics and the per-step losses."""
  import jax.numpy as jnp  # noqa: PLC0415
  import optax  # noqa: PLC0415

  from sdpal_jax import train, train_state  # noqa: PLC0415

  original = train_state.make_optimizer

  def first_step_only(step):  # later steps run forward and backward but move nothing
    return jnp.where(step == 0, config.optimizer.learning_rate, 0.0)

  train_state.make_optimizer = lambda c: optax.sgd(first_step_only)
  try:
    result = train.train_and_evaluate(config, workdir)
  finally:
    train_state.make_optimizer = original
  return {
    "params": _flat(result["state"].params),
    "batch_stats": _flat(result["state"].batch_stats),
    "losses": np.asarray(result["train_losses"], np.float64),
    "validation_auc": np.asarray(result["eval"]["validation"]["pixel_auc"], np.float64),
  }


def save_run(path: str, run: dict[str, np.ndarray]) -> None:
  np.savez(path, **run)


def load_run(path: str) -> dict[str, np.ndarray]:
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


def initial_variables(config) -> dict[str, np.ndarray]:
  """The parameters and statistics a run of ``config`` starts from (train.py's key split)."""
  from sdpal_jax import train_state  # noqa: PLC0415
  from sdpal_jax.models import build_model  # noqa: PLC0415

  init_key, _ = jax.random.split(jax.random.key(config.seed))
  state = train_state.create_train_state(config, build_model(config.model), init_key)
  return {"params": _flat(state.params), "batch_stats": _flat(state.batch_stats)}


def logged_grad_norms(workdir: str) -> np.ndarray:
  """``train_grad_norm`` per logged step, from the TensorBoard events in ``workdir``."""
  import tensorflow as tf  # noqa: PLC0415

  values = {}
  for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == "train_grad_norm":
          values[event.step] = float(tf.make_ndarray(value.tensor))
  return np.asarray([values[s] for s in sorted(values)])


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def assert_same_training(got: dict, expected: dict, before: dict) -> None:
  """Two runs of the same config agree: losses, the first step's gradient norm, and the
  parameter and BatchNorm-statistics *updates* relative to their size.

  Only the first step moves the parameters (``train_with_sgd``): the network's loss is not
  smooth (the thresholded graph), so after a step the ~0.5% rounding difference between
  layouts changes the next gradient by ~10-25%; the second step still checks that step's
  batch (its loss and its BatchNorm statistics).
  """
  np.testing.assert_allclose(got["losses"][0], expected["losses"][0], rtol=1e-5)
  np.testing.assert_allclose(got["losses"][1:], expected["losses"][1:], rtol=5e-3)
  if "grad_norms" in got and "grad_norms" in expected:
    np.testing.assert_allclose(got["grad_norms"][0], expected["grad_norms"][0], rtol=1e-3)
  for name, tolerance in (("params", PARAMS_TOLERANCE), ("batch_stats", STATS_TOLERANCE)):
    update = got[name] - before[name]
    reference = expected[name] - before[name]
    assert np.linalg.norm(reference) > 1e-3 * np.linalg.norm(before[name]), f"{name} barely moved"
    difference = relative_difference(update, reference)
    assert difference < tolerance, (
      f"{name} updates differ by {difference:.2%} of their size (tolerance {tolerance:.0%})"
    )
