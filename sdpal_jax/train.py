r"""Training: ``python -m sdpal_jax.train --config NAME_OR_FILE --workdir DIR``.

One ``jax.sharding.Mesh`` over every device of every process, the batch
sharded on its ``data`` axis and the parameters replicated; under jit the
BatchNorm statistics of a sharded batch are reduced over the whole global
batch, i.e. averaged across devices. The step itself is
``sdpal_jax.train_state.train_step``; validation is
``sdpal_jax.evaluator.Evaluator`` (one per ``config.evals`` entry, the same
evaluator ``python -m sdpal_jax.evaluate`` uses); checkpoints, the resume
order and ``best/`` are ``sdpal_jax.checkpoint.TrainingCheckpoints``.
SIGTERM and Ctrl-C (SIGINT) save the current step and exit with status 128 + the
signal's number (143, 130); a second Ctrl-C exits at once. A non-finite loss,
gradient norm or state stops the run before anything non-finite is saved. One
run per workdir (``DIR/.lock``); resuming with a config that changes the
model, the preprocessing or the optimizer's state is refused before anything in
DIR is touched (``resume_conflicts``). The console shows one progress
line per ``log_every_steps`` (step, steps/s, ETA, loss, last validation);
TensorBoard events in DIR hold the losses, the learning rate, the validation
metrics and a few validation images with their predictions.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import time
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags, logging
from clu import metric_writers, periodic_actions
from clu import metrics as clu_metrics
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sdpal_jax import checkpoint as checkpoint_lib
from sdpal_jax import cli, input_pipeline, model_config
from sdpal_jax import metrics as metrics_lib
from sdpal_jax import train_state as train_state_lib
from sdpal_jax.errors import ConfigError, SdpalError
from sdpal_jax.evaluator import Evaluator
from sdpal_jax.inference import Predictor
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
  model_config.validate_config_values(config)
  model_config.validate_model_config(config.model)
  model_config.validate_preprocess_config(config.preprocess)
  if config.preprocess.image_size is None and not (
    config.data.resize_policy == "random_crop" and config.data.crop_size is not None
  ):
    raise ConfigError(
      "preprocess.image_size=None (a model fed photos at their own size) trains on crops: "
      "set data.resize_policy='random_crop' and data.crop_size=(H, W), or set "
      "preprocess.image_size=(H, W)."
    )
  input_pipeline.validate_data_config(config.data)
  train_state_lib.make_loss(config.loss)  # validates loss.*
  train_state_lib.learning_rate_schedule(config)  # validates optimizer.schedule
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


# Fields that may change when a run resumes: they change how the model computes, not what it
# holds (everything outside model/preprocess may change, except the optimizer's state layout and
# the metric best/ is ranked by; see resume_conflicts).
RESUMABLE_MODEL_FIELDS = (
  "model.walk.method",
  "model.walk.block_size",
  "model.walk.similarity_cache_mib",
  "model.conv_impl",
  "model.dtype",
  "model.init",
)


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flat(value, f"{prefix}{key}."))
    return out
  return {prefix[:-1]: tree}


def _state_layout(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config values that fix the saved state's tree and meaning, flattened."""
  raw = json.loads(json.dumps(checkpoint_lib._to_jsonable(config)))  # tuples -> lists
  layout = {
    k: v for k, v in _flat({"model": raw["model"], "preprocess": raw["preprocess"]}).items()
  }
  for field in RESUMABLE_MODEL_FIELDS:
    layout.pop(field, None)
  opt = raw.get("optimizer", {})
  layout["optimizer.accumulation_steps"] = opt.get("accumulation_steps", 1)
  layout["optimizer.weight_decay (on)"] = bool(opt.get("weight_decay"))
  layout["optimizer.grad_clip (on)"] = bool(opt.get("grad_clip"))
  layout["best_metric"] = raw.get("best_metric")
  return layout


def resume_conflicts(
  recorded: ml_collections.ConfigDict, config: ml_collections.ConfigDict
) -> list[str]:
  """``"field: recorded -> new"`` for each difference a resume cannot take, in field order.

  The model and preprocessing (except ``RESUMABLE_MODEL_FIELDS``), whether weight decay and
  gradient clipping are on and the accumulation steps (each changes the optimizer state's
  tree), and ``best_metric`` (what ``best/`` is ranked by) must match; the step counts,
  cadences, learning rate and schedule, data, evals, batch size, loss and seed may change.
  """
  before, after = _state_layout(recorded), _state_layout(config)
  return [
    f"{key}: {before.get(key, '(absent)')!r} -> {after.get(key, '(absent)')!r}"
    for key in sorted(set(before) | set(after))
    if before.get(key) != after.get(key)
  ]


def _check_resumable(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Refuses a config that cannot resume the saved steps in ``workdir`` (nothing is written)."""
  if not checkpoint_lib.saved_steps(workdir) or not os.path.exists(
    os.path.join(workdir, checkpoint_lib.CONFIG_FILE)
  ):
    return
  conflicts = resume_conflicts(checkpoint_lib.read_config(workdir), config)
  if conflicts:
    shown = "; ".join(conflicts[:6]) + (f"; and {len(conflicts) - 6} more" if conflicts[6:] else "")
    raise ConfigError(
      f"{workdir} holds a run that this config cannot resume ({shown}): use the values of "
      f"{os.path.join(workdir, checkpoint_lib.CONFIG_FILE)}, or another --workdir."
    )


# --- one run per workdir ---------------------------------------------------------------------

LOCK_FILE = ".lock"


class WorkdirBusyError(SdpalError):
  """Another training run holds the workdir's lock."""


class WorkdirLock:
  """An exclusive ``fcntl.flock`` on ``DIR/.lock``, which holds ``pid N on HOST since TIME``.

  The kernel drops the lock when its process ends, however it ends (a crash or SIGKILL
  included), so no stale lock is ever left behind; the file itself stays. Where ``fcntl``
  does not exist (Windows) no lock is taken.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd: int | None = None

  def acquire(self) -> None:
    try:
      import fcntl  # noqa: PLC0415 (Unix only: on Windows no lock is taken)
    except ImportError:
      return
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      holder = os.read(fd, 512).decode(errors="replace").strip() or "holder unknown"
      os.close(fd)
      raise WorkdirBusyError(
        f"{os.path.dirname(self.path)} is in use by another training run ({holder}): wait for "
        "it to end or stop it, or use another --workdir."
      ) from None
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}\n".encode())
    self._fd = fd

  def release(self) -> None:
    if self._fd is not None:
      os.close(self._fd)  # closing the descriptor drops the lock
      self._fd = None

  def __enter__(self) -> WorkdirLock:
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()


# --- the loop --------------------------------------------------------------------------------


class TrainingDivergedError(SdpalError):
  """A non-finite loss, gradient norm or state: the run stopped without saving it."""


@jax.jit
def _all_finite(tree) -> jax.Array:
  """Whether every floating-point leaf of ``tree`` is finite (one scalar, reduced on device)."""
  leaves = [
    jnp.all(jnp.isfinite(x))
    for x in jax.tree_util.tree_leaves(tree)
    if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)
  ]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


class _Preemption:
  """SIGTERM or Ctrl-C -> save a checkpoint and stop, at the same step in every process.

  One process: a handler for SIGTERM and SIGINT records the signal, which
  ``reached(step)`` returns; the handler only sets a flag, so the signal never
  interrupts the data pipeline's or XLA's C++ code. After the first SIGINT the
  default action is back: a second Ctrl-C ends the process at once (without
  saving), even inside a long compilation.

  Several processes: SIGTERM may reach them at different steps, or only one
  of them, and a process that stopped alone would leave the others waiting
  forever in the next step's collectives. ``jax.distributed.initialize``
  starts JAX's preemption sync manager, which catches SIGTERM itself and
  shares the notice through the coordination service;
  ``multihost_utils.reached_preemption_sync_point(step)``, asked after every
  step by every process, then turns true in all of them at the same step
  (one past the furthest step any process had reported). No Python handler
  is installed then (it would replace the manager's), and Ctrl-C keeps
  Python's KeyboardInterrupt. When the preemption service is off
  (``jax_enable_preemption_service=False``) the processes' signal flags are
  all-gathered after every step instead (a small collective that makes each
  step wait for the previous one).
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    # Set by the handler only, never cleared: a signal that arrives while this process waits in
    # the all-gather must not be overwritten by that all-gather's (older) result.
    self._signum = 0
    self._previous = {}
    self._mode = "local"
    if jax.process_count() > 1:
      self._mode = "sync" if jax.config.jax_enable_preemption_service else "allgather"
    if self._mode != "sync":
      for signum in self.SIGNALS:
        try:
          self._previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # not in the main thread (e.g. notebooks' worker threads)
          pass

  def _handle(self, signum, frame):
    del frame
    name = signal.Signals(signum).name
    again = " (Ctrl-C again to exit at once, without saving)" if signum == signal.SIGINT else ""
    logging.warning("%s received: saving a checkpoint and stopping%s.", name, again)
    if signum == signal.SIGINT:
      signal.signal(signal.SIGINT, signal.SIG_DFL)
    self._signum = self._signum or int(signum)

  def reached(self, step: int) -> int:
    """The signal to stop on after ``step`` (0: go on): the same answer in every process."""
    if self._mode == "sync":
      requested = int(signal.SIGTERM) if multihost_utils.reached_preemption_sync_point(step) else 0
    elif self._mode == "allgather":
      signalled = multihost_utils.process_allgather(np.asarray(self._signum != 0, np.int32))
      # A process that saw no signal itself stops for another's notice: a preemption (SIGTERM).
      requested = (self._signum or int(signal.SIGTERM)) if np.any(signalled) else 0
    else:
      requested = self._signum
    if requested:
      logging.warning("preemption: every process saves step %d and stops.", step)
    return requested

  def close(self) -> None:
    """Puts back the handlers found at construction."""
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}


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
    parts = []
    for name, m in results.items():
      part = f"{name} F1 {m['pixel_f1']:.4f} AUC {m['pixel_auc']:.4f}"
      if "pixel_auc_centre_controlled" in m:  # the AUC with the forgeries' position taken out
        part += f" (centre-controlled {m['pixel_auc_centre_controlled']:.4f})"
      parts.append(part)
    self.validation = f"val@{step}: " + ", ".join(parts) + (" (best)" if best else "")
    if self.enabled:
      print(self.validation, flush=True)

  def stopped(self, step: int, signum: int, directory: str) -> None:
    if self.enabled:
      print(
        f"stopped by {signal.Signals(signum).name} at step {step}/{self.total}: saved "
        f"{os.path.join(directory, str(step))}; the same command resumes from it.",
        flush=True,
      )


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
    log_every_steps, "stopped_by": the signal number that stopped the run early
    after saving its step (0: it ran to num_train_steps)}``.

  Raises:
    TrainingDivergedError: a non-finite loss, gradient norm or state (nothing of it saved).
    WorkdirBusyError: another run holds ``workdir``.
    ConfigError: an invalid config, or one that cannot resume ``workdir``'s steps.
    CheckpointError: a checkpoint that cannot be restored or saved.
  """
  precision = config.get("matmul_precision", "default")
  try:  # full float32 on GPUs needs "highest": their default is TF32
    jax.config.update("jax_default_matmul_precision", precision)
  except ValueError as e:
    raise ConfigError(f"matmul_precision={precision!r} is invalid: {e}") from e
  validate_config(config)
  workdir = os.path.abspath(workdir)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"workdir {workdir} is a file: name a directory (it is created if missing).")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"workdir {workdir}: cannot create it ({e.strerror}).") from e
  # First: from here on a signal only sets a flag (never an exception inside C++ code).
  preemption = _Preemption()
  lock = WorkdirLock(workdir)
  try:
    if jax.process_index() == 0:
      lock.acquire()
    _check_resumable(workdir, config)
    return _train(config, workdir, preemption)
  finally:
    preemption.close()
    lock.release()


def _train(
  config: ml_collections.ConfigDict, workdir: str, preemption: _Preemption
) -> dict[str, Any]:
  """``train_and_evaluate`` once the workdir is locked and the config can resume it."""

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
  writer = None
  try:  # the managers are closed however the run ends
    state, origin = checkpoints.restore_or_initialize(state, config.init_from)
    logging.info("training starts from %s", origin)
    # Only now: a refused or failed resume leaves the recorded config and the events untouched.
    if jax.process_index() == 0:
      checkpoint_lib.write_config(workdir, config)
    writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
    state = jax.device_put(state, replicated)

    # Validation: every process scores the whole split on its local devices.
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

    image_size = train_state_lib.training_input_size(config)
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
    eval_metrics: dict[str, Any] = {}
    pending = []  # per-step metrics still on the devices, read at the next log, eval or save step
    logged_losses = []
    last_saved = start if origin.startswith("resumed") else None
    step = start
    state_checked_at = None

    def check_finite(step: int, *, check_state: bool) -> list[dict[str, np.ndarray]]:
      """The pending steps' metrics on the host, after checking them (and the state) are finite.

      Read only at log, validation and save steps, not after every step: a read waits for the
      step to finish, which would stop the host from queuing the next step (and its batch) while
      the accelerator runs this one. Each step's metrics are kept, so the first bad step is
      still named exactly; at most log_every_steps steps run past it, and none is saved.
      """
      nonlocal state_checked_at
      host = _to_host(pending)
      for offset, metrics in enumerate(host):
        loss, norm = float(metrics["loss"]), float(metrics["grad_norm"])
        if not (np.isfinite(loss) and np.isfinite(norm)):
          _diverged(step - len(host) + offset + 1, f"loss {loss:.4g}, gradient norm {norm:.4g}")
      if check_state and state_checked_at != step:
        if not bool(_to_host(_all_finite(state))):
          _diverged(step, "finite loss but non-finite parameters or optimizer state")
        state_checked_at = step
      return host

    def _diverged(bad_step: int, what: str) -> None:
      where = (
        f"{os.path.join(workdir, checkpoint_lib.LATEST_DIR, str(last_saved))} (resume from it "
        "with a lower optimizer.learning_rate or with optimizer.grad_clip)"
        if last_saved is not None
        else "none yet (start again with a lower optimizer.learning_rate or optimizer.grad_clip)"
      )
      raise TrainingDivergedError(
        f"training diverged at step {bad_step} ({what}); stopped without saving it. "
        f"Last good checkpoint: {where}."
      )

    while step < total:
      batch = input_pipeline.shard_batch(next(batches), data_sharding)
      state, step_metrics = step_fn(state, batch, walk_key)
      step += 1
      pending.append(step_metrics)
      for hook in hooks:
        hook(step)
      if step % config.log_every_steps == 0 or step == total:
        host = check_finite(step, check_state=False)
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
        check_finite(step, check_state=True)
        predictor.set_variables(
          _to_host({"params": state.params, "batch_stats": state.batch_stats})
        )
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
      stopped_by = preemption.reached(step)  # asked after every step, by every process
      if step % config.checkpoint_every_steps == 0 or step == total or stopped_by:
        check_finite(step, check_state=True)
        checkpoints.save(step, state)
        last_saved = step
      if stopped_by:
        console.stopped(step, stopped_by, os.path.join(workdir, checkpoint_lib.LATEST_DIR))
        break
    else:
      stopped_by = 0
  finally:
    checkpoints.close()
    if writer is not None:
      writer.flush()
  return {
    "state": _to_host(state),
    "eval": eval_metrics,
    "step": step,
    "origin": origin,
    "train_losses": logged_losses,
    "stopped_by": stopped_by,
  }


# --- command line ----------------------------------------------------------------------------


def _define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Directory for checkpoints and TensorBoard events.")
  flags.mark_flag_as_required("workdir")


def main(argv) -> int:
  if len(argv) > 1:
    raise ConfigError(f"unexpected arguments {argv[1:]}; see --help.")
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize()
  result = train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
  # A run stopped by a signal (after saving) exits as a shell reports a process killed by it
  # (130 for Ctrl-C, 143 for SIGTERM), so a wrapper can tell it from a finished run.
  return 128 + result["stopped_by"] if result["stopped_by"] else 0


def run_main() -> None:
  """Console entry point (``sdpal-train``)."""
  cli.run(main, _define_flags, config_flag=True)


if __name__ == "__main__":
  run_main()
