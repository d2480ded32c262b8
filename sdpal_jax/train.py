r"""Training: ``python -m sdpal_jax.train --config NAME_OR_FILE --workdir DIR``.

One ``jax.sharding.Mesh`` over every device of every process, the batch
sharded on its ``data`` axis and the parameters replicated; under jit the
BatchNorm statistics of a sharded batch are reduced over the whole global
batch, i.e. averaged across devices. The step itself is
``sdpal_jax.train_state.train_step``; validation is
``sdpal_jax.evaluator.Evaluator`` (one per ``config.evals`` entry, the same
evaluator ``python -m sdpal_jax.evaluate`` uses); checkpoints, the resume
order and ``best/`` are ``sdpal_jax.checkpoint.TrainingCheckpoints``.
SIGTERM saves a checkpoint and exits cleanly. The console shows one progress
line per ``log_every_steps`` (step, steps/s, ETA, loss, last validation);
TensorBoard events in DIR hold the losses, the learning rate, the validation
metrics and a few validation images with their predictions.
"""

from __future__ import annotations

import functools
import os
import signal
import time
import warnings
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions
from clu import metrics as clu_metrics
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sdpal_jax import checkpoint as checkpoint_lib
from sdpal_jax import input_pipeline, model_config
from sdpal_jax import metrics as metrics_lib
from sdpal_jax import train_state as train_state_lib
from sdpal_jax.errors import ConfigError
from sdpal_jax.evaluator import Evaluator
from sdpal_jax.models import build_model

# Training-loop metrics, averaged over the steps between two log lines.
TrainMetrics = clu_metrics.Collection.create(
  loss=clu_metrics.Average.from_output("loss"),
  grad_norm=clu_metrics.Average.from_output("grad_norm"),
)


# --- config ----------------------------------------------------------------------------------


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Stops with a ConfigError naming the first invalid field (before any data is read)."""
  for field in ("model", "preprocess", "data", "optimizer", "loss"):
    if field not in config:
      raise ConfigError(f"config has no '{field}' section.")
  model_config.validate_model_config(config.model)
  model_config.validate_preprocess_config(config.preprocess)
  if config.preprocess.image_size is None:
    raise ConfigError("preprocess.image_size must be set for training (H, W).")
  input_pipeline.validate_data_config(config.data)
  train_state_lib.make_loss(config.loss)  # validates loss.*
  train_state_lib.learning_rate_schedule(config)  # validates optimizer.schedule
  for field in (
    "num_train_steps",
    "global_batch_size",
    "log_every_steps",
    "eval_every_steps",
    "checkpoint_every_steps",
  ):
    if int(config[field]) <= 0:
      raise ConfigError(f"{field}={config[field]!r} must be a positive integer.")
  if config.global_batch_size % jax.device_count():
    raise ConfigError(
      f"global_batch_size={config.global_batch_size} is not divisible by the "
      f"{jax.device_count()} devices."
    )
  if not config.evals:
    raise ConfigError("config.evals is empty: name at least one validation dataset.")
  names = [e.name for e in config.evals]
  if len(set(names)) != len(names):
    raise ConfigError(f"config.evals names {names} must be unique.")
  eval_name, _, metric = config.best_metric.partition("/")
  if eval_name not in names or not metric:
    raise ConfigError(
      f"best_metric={config.best_metric!r}: expected '<eval name>/<metric>' with an eval "
      f"name from config.evals ({', '.join(names)}), e.g. '{names[0]}/pixel_f1'."
    )
  if config.init_from:
    checkpoint_lib.resolve_backbone(config.init_from)


# --- the loop --------------------------------------------------------------------------------


class _Preemption:
  """SIGTERM -> save a checkpoint and stop, at the same step in every process.

  One process: a SIGTERM handler sets a flag that ``reached(step)`` returns.

  Several processes: SIGTERM may reach them at different steps, or only one
  of them, and a process that stopped alone would leave the others waiting
  forever in the next step's collectives. ``jax.distributed.initialize``
  starts JAX's preemption sync manager, which catches SIGTERM itself and
  shares the notice through the coordination service;
  ``multihost_utils.reached_preemption_sync_point(step)``, asked after every
  step by every process, then turns true in all of them at the same step
  (one past the furthest step any process had reported). No Python handler
  is installed then: it would replace the manager's. When the preemption
  service is off (``jax_enable_preemption_service=False``) the processes'
  SIGTERM flags are all-gathered after every step instead (a small
  collective that makes each step wait for the previous one).
  """

  def __init__(self):
    # Set by the handler only, never cleared: a SIGTERM that arrives while this process waits in
    # the all-gather must not be overwritten by that all-gather's (older) result.
    self._sigterm = False
    self._mode = "local"
    if jax.process_count() > 1:
      self._mode = "sync" if jax.config.jax_enable_preemption_service else "allgather"
    if self._mode != "sync":
      try:
        signal.signal(signal.SIGTERM, self._handle)
      except ValueError:  # not in the main thread (e.g. notebooks' worker threads)
        pass

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint and stopping.")
    self._sigterm = True

  def reached(self, step: int) -> bool:
    """Whether to save and stop after ``step``: the same answer in every process."""
    from jax.experimental import multihost_utils  # noqa: PLC0415

    if self._mode == "sync":
      requested = multihost_utils.reached_preemption_sync_point(step)
    elif self._mode == "allgather":
      flags = multihost_utils.process_allgather(np.asarray(self._sigterm, np.int32))
      requested = bool(np.any(flags))
    else:
      requested = self._sigterm
    if requested:
      logging.warning("preemption: every process saves step %d and stops.", step)
    return requested


def _to_host(tree):
  """Replicated (possibly multi-process) arrays -> host numpy, read from a local copy."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


class _Console:
  """One progress line per log step on stdout (process 0): step, speed, ETA, loss, validation."""

  def __init__(self, total: int, start: int):
    self.total, self.start = total, start
    self.started = time.monotonic()
    self.validation = ""
    self.enabled = jax.process_index() == 0

  def log(self, step: int, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    elapsed = time.monotonic() - self.started
    rate = (step - self.start) / elapsed if elapsed > 0 else 0.0
    eta = (self.total - step) / rate if rate > 0 else float("nan")
    eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if np.isfinite(eta) else "?"
    line = (
      f"step {step}/{self.total}  {rate:.2f} steps/s  ETA {eta_text}  "
      f"loss {scalars['train_loss']:.4f}  lr {scalars['learning_rate']:.2e}"
    )
    print(line + (f"  | {self.validation}" if self.validation else ""), flush=True)

  def validated(self, step: int, results: dict[str, dict[str, Any]], best: bool) -> None:
    parts = [
      f"{name} F1 {m['pixel_f1']:.4f} AUC {m['pixel_auc']:.4f}" for name, m in results.items()
    ]
    self.validation = f"val@{step}: " + ", ".join(parts) + (" (best)" if best else "")
    if self.enabled:
      print(self.validation, flush=True)


def _validation_images(examples: list[dict[str, np.ndarray]]) -> np.ndarray:
  """``[N, H, 3W, 3]`` uint8 rows of photo | ground truth | predicted probability."""
  rows = []
  for example in examples:
    image = example["image"]
    mask = np.repeat((example["mask"] > 0)[..., None] * 255, 3, axis=-1).astype(np.uint8)
    prob = np.repeat((np.clip(example["probs"], 0, 1) * 255)[..., None], 3, axis=-1)
    rows.append(np.concatenate([image, mask, prob.astype(np.uint8)], axis=1))
  size = rows[0].shape
  return np.stack([r for r in rows if r.shape == size])


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains per ``config``, writing checkpoints and events to ``workdir``.

  Returns:
    ``{"state": final TrainState (host numpy), "eval": {eval name: metrics} of the
    last validation, "step": final step, "origin": where the run started from
    (resumed / backbone / scratch), "train_losses": the mean losses logged every
    log_every_steps}``.
  """
  precision = config.get("matmul_precision", "default")
  try:  # full float32 on GPUs needs "highest": their default is TF32
    jax.config.update("jax_default_matmul_precision", precision)
  except ValueError as e:
    raise ConfigError(f"matmul_precision={precision!r} is invalid: {e}") from e
  validate_config(config)
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    checkpoint_lib.write_config(workdir, config)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)

  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  data_sharding = NamedSharding(mesh, PartitionSpec("data"))
  replicated = NamedSharding(mesh, PartitionSpec())

  model = build_model(config.model)
  root = jax.random.key(config.seed)
  init_key, walk_key = jax.random.split(root)
  state = train_state_lib.create_train_state(config, model, init_key)
  checkpoints = checkpoint_lib.TrainingCheckpoints(
    workdir, keep=config.keep_checkpoints, best_metric=config.best_metric
  )
  state, origin = checkpoints.restore_or_initialize(state, config.init_from)
  logging.info("training starts from %s", origin)
  state = jax.device_put(state, replicated)

  # Validation: every process scores the whole split on its local devices.
  from sdpal_jax.inference import Predictor  # noqa: PLC0415

  evaluators = {
    e.name: Evaluator.from_config(
      e,
      data_config=config.data,
      batch_size=int(config.global_batch_size),
      cache=True,
      num_examples=int(config.num_eval_images) if i == 0 else 0,
    )
    for i, e in enumerate(config.evals)
  }
  for evaluator in evaluators.values():
    evaluator.prepare()
  predictor = Predictor(
    model=model,
    variables=_to_host({"params": state.params, "batch_stats": state.batch_stats}),
    model_config=config.model,
    preprocess_config=config.preprocess,
  )

  image_size = tuple(int(s) for s in config.preprocess.image_size)
  train_examples = None
  if config.data.pipeline == "memory":
    native = config.data.resize_policy == "random_crop"
    *train_examples, skipped = input_pipeline.load_split(
      config.data, config.data.train_split, image_size, native=native
    )
    for path, reason in skipped:
      logging.warning("skipped %s: %s", path, reason)

  loss_fn = train_state_lib.make_loss(config.loss)
  schedule = train_state_lib.learning_rate_schedule(config)
  step_fn = jax.jit(
    functools.partial(train_state_lib.train_step, loss_fn=loss_fn),
    in_shardings=(replicated, data_sharding, replicated),
    out_shardings=(replicated, replicated),
    donate_argnums=(0,),
  )
  start = int(_to_host(state.step))
  batches = input_pipeline.train_batches(
    config.data,
    image_size=image_size,
    global_batch_size=int(config.global_batch_size),
    seed=int(config.seed),
    normalization=config.preprocess.normalization,
    start_step=start,
    examples=train_examples,
  )
  total = int(config.num_train_steps)
  hooks = []
  if jax.process_index() == 0 and config.get("profile_steps"):
    hooks.append(periodic_actions.Profile(num_profile_steps=config.profile_steps, logdir=workdir))
  console = _Console(total, start)
  preemption = _Preemption()
  eval_metrics: dict[str, Any] = {}
  pending = []  # per-step metrics still on the devices, read at the next log step
  logged_losses = []
  step = start
  while step < total:
    batch = input_pipeline.shard_batch(next(batches), data_sharding)
    state, step_metrics = step_fn(state, batch, walk_key)
    step += 1
    pending.append(step_metrics)
    for hook in hooks:
      hook(step)
    if step % config.log_every_steps == 0 or step == total:
      host = _to_host(pending)
      averaged = TrainMetrics.single_from_model_output(
        loss=np.asarray([m["loss"] for m in host]),
        grad_norm=np.asarray([m["grad_norm"] for m in host]),
      ).compute()
      scalars = {f"train_{name}": float(value) for name, value in averaged.items()}
      scalars["learning_rate"] = float(schedule(step - 1))
      writer.write_scalars(step, scalars)
      logged_losses.append(scalars["train_loss"])
      console.log(step, scalars)
      pending = []
    if step % config.eval_every_steps == 0 or step == total:
      predictor.set_variables(_to_host({"params": state.params, "batch_stats": state.batch_stats}))
      with warnings.catch_warnings():  # kept in each result's "warnings"
        warnings.simplefilter("ignore", metrics_lib.MetricWarning)
        eval_metrics = {name: e.run(predictor) for name, e in evaluators.items()}
      flat = {
        f"{name}/{key}": float(value)
        for name, m in eval_metrics.items()
        for key, value in m.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
      }
      if config.best_metric not in flat:
        raise ConfigError(
          f"best_metric={config.best_metric!r} is not among the validation metrics "
          f"({', '.join(sorted(flat))})."
        )
      writer.write_scalars(step, {k: v for k, v in flat.items() if not k.endswith("seconds")})
      first = next(iter(evaluators.values()))
      if first.examples and jax.process_index() == 0:
        writer.write_images(step, {"validation/examples": _validation_images(first.examples)})
      is_best = checkpoints.save_if_best(
        step, state, {config.best_metric: flat[config.best_metric]}
      )
      console.validated(step, eval_metrics, is_best)
    stop = preemption.reached(step)  # asked after every step, by every process
    if step % config.checkpoint_every_steps == 0 or step == total or stop:
      checkpoints.save(step, state)
    if stop:
      break
  checkpoints.close()
  writer.flush()
  return {
    "state": _to_host(state),
    "eval": eval_metrics,
    "step": step,
    "origin": origin,
    "train_losses": logged_losses,
  }


# --- command line ----------------------------------------------------------------------------


def _define_flags() -> None:
  from absl import flags  # noqa: PLC0415

  flags.DEFINE_string("workdir", None, "Directory for checkpoints and TensorBoard events.")
  flags.mark_flag_as_required("workdir")


def main(argv) -> int:
  from absl import flags  # noqa: PLC0415

  if len(argv) > 1:
    raise ConfigError(f"unexpected arguments {argv[1:]}; see --help.")
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize()
  train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
  return 0


def run_main() -> None:
  """Console entry point (``sdpal-train``)."""
  from sdpal_jax import cli  # noqa: PLC0415

  cli.run(main, _define_flags, config_flag=True)


if __name__ == "__main__":
  run_main()
