r"""Training: ``python -m sdpal_jax.train --config configs/NAME.py --workdir DIR``.

One ``jax.sharding.Mesh`` over every device of every process, the batch
sharded on its ``data`` axis and the parameters replicated; under jit the
BatchNorm statistics of a sharded batch are reduced over the whole global
batch, i.e. averaged across devices. Checkpoints follow ``sdpal_jax.checkpoint``:
``DIR/config.json``, ``DIR/checkpoints/<step>/{model,train_state}`` (latest few)
and ``DIR/best/<step>/...`` (best validation F1). A run restarted with the
same workdir resumes from the latest step; SIGTERM saves a checkpoint and
exits cleanly. TensorBoard events and console logs come from clu.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import app, flags, logging
from clu import metric_writers, periodic_actions
from clu import metrics as clu_metrics
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sdpal_jax import checkpoint as checkpoint_lib
from sdpal_jax import input_pipeline, metrics, model_config
from sdpal_jax.errors import ConfigError, SdpalError
from sdpal_jax.models import build_model, init_model

TRAIN_ITEM = "train_state"


# Training-loop metrics, averaged over the steps between two log lines.
TrainMetrics = clu_metrics.Collection.create(
  loss=clu_metrics.Average.from_output("loss"),
  grad_norm=clu_metrics.Average.from_output("grad_norm"),
)


# --- pure pieces -----------------------------------------------------------------------------


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam(W) with an optional schedule and gradient clipping (config.optimizer)."""
  opt = config.optimizer
  steps = int(config.num_train_steps)
  if opt.schedule == "constant":
    lr = opt.learning_rate
  elif opt.schedule == "cosine":
    lr = optax.cosine_decay_schedule(opt.learning_rate, steps)
  elif opt.schedule == "warmup_cosine":
    lr = optax.warmup_cosine_decay_schedule(
      0.0, opt.learning_rate, opt.warmup_steps, max(steps, opt.warmup_steps + 1)
    )
  else:
    raise ConfigError(
      f"optimizer.schedule={opt.schedule!r}; expected constant, cosine or warmup_cosine."
    )
  parts = []
  if opt.grad_clip:
    parts.append(optax.clip_by_global_norm(opt.grad_clip))
  if opt.weight_decay:
    parts.append(optax.adamw(lr, weight_decay=opt.weight_decay))
  else:
    parts.append(optax.adam(lr))
  return optax.chain(*parts)


def segmentation_loss(logits, masks, dice_weight: float = 0.0, positive_weight: float = 1.0):
  """Mean BCE-with-logits, plus ``dice_weight`` x (1 - soft Dice) when set.

  ``positive_weight`` multiplies the BCE of tampered pixels (torch's
  ``pos_weight``): tampered pixels are rare (~5-10%), and weighting them
  moves the probabilities of uncertain regions above the 0.5 threshold the
  F1 protocols use.
  """
  per_pixel = optax.sigmoid_binary_cross_entropy(logits, masks)
  if positive_weight != 1.0:
    per_pixel = per_pixel * (1.0 + (positive_weight - 1.0) * masks)
  bce = per_pixel.mean()
  if not dice_weight:
    return bce
  probs = jax.nn.sigmoid(logits)
  dice = (2 * jnp.sum(probs * masks) + 1e-6) / (jnp.sum(probs) + jnp.sum(masks) + 1e-6)
  return bce + dice_weight * (1 - dice)


def train_step(model, optimizer, dice_weight, state, batch, walk_key, positive_weight=1.0):
  """One optimisation step: (state, batch) -> (new state, metrics). Pure; jit at the call site."""

  def loss_fn(params):
    logits, updates = model.apply(
      {"params": params, "batch_stats": state["batch_stats"]},
      batch["image"],
      train=True,
      mutable=["batch_stats"],
      rngs={"walk": jax.random.fold_in(walk_key, state["step"])},
    )
    loss = segmentation_loss(logits, batch["mask"], dice_weight, positive_weight)
    return loss, updates["batch_stats"]

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
  updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
  new_state = {
    "params": optax.apply_updates(state["params"], updates),
    "batch_stats": batch_stats,
    "opt_state": opt_state,
    "step": state["step"] + 1,
  }
  return new_state, {"loss": loss, "grad_norm": optax.global_norm(grads)}


def eval_step(model, variables, images, walk_key):
  """Probabilities ``[B, H, W]`` in eval mode."""
  logits = model.apply(variables, images, train=False, rngs={"walk": walk_key})
  return jax.nn.sigmoid(logits)


# --- config ----------------------------------------------------------------------------------


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Stops with a ConfigError naming the first invalid field."""
  for field in ("model", "preprocess", "data", "optimizer"):
    if field not in config:
      raise ConfigError(f"config has no '{field}' section.")
  model_config.validate_model_config(config.model)
  model_config.validate_preprocess_config(config.preprocess)
  if config.preprocess.image_size is None:
    raise ConfigError("preprocess.image_size must be set for training (H, W).")
  input_pipeline.validate_data_config(config.data)
  if config.loss.get("positive_weight", 1.0) <= 0:
    raise ConfigError(f"loss.positive_weight={config.loss.positive_weight!r} must be > 0.")
  if config.loss.dice_weight < 0:
    raise ConfigError(f"loss.dice_weight={config.loss.dice_weight!r} must be >= 0.")
  for field in (
    "num_train_steps",
    "global_batch_size",
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


# --- the loop --------------------------------------------------------------------------------


class _Preemption:
  """Turns SIGTERM into a flag the loop checks between steps."""

  def __init__(self):
    self.requested = False
    try:
      signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not in the main thread (e.g. notebooks' worker threads)
      pass

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint and stopping.")
    self.requested = True


def _abstract_like(tree):
  return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)


def _save(manager, step, state):
  manager.save(
    step,
    args=ocp.args.Composite(
      **{
        checkpoint_lib.MODEL_ITEM: ocp.args.StandardSave(
          {"params": state["params"], "batch_stats": state["batch_stats"]}
        ),
        TRAIN_ITEM: ocp.args.StandardSave({"opt_state": state["opt_state"], "step": state["step"]}),
      }
    ),
    force=True,
  )


def _restore(manager, step, state):
  restored = manager.restore(
    step,
    args=ocp.args.Composite(
      **{
        checkpoint_lib.MODEL_ITEM: ocp.args.StandardRestore(
          _abstract_like({"params": state["params"], "batch_stats": state["batch_stats"]})
        ),
        TRAIN_ITEM: ocp.args.StandardRestore(
          _abstract_like({"opt_state": state["opt_state"], "step": state["step"]})
        ),
      }
    ),
  )
  model_item, train_item = restored[checkpoint_lib.MODEL_ITEM], restored[TRAIN_ITEM]
  return {**model_item, **train_item}


def _to_host(tree):
  """Replicated (possibly multi-process) arrays -> host numpy, read from a local copy."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


def _global_batch(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A global array sharded on the batch axis from the full batch every process holds."""
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def evaluate(model, variables, images, masks, *, batch_size, normalization, sharding, walk_key):
  """Validation pixel metrics (the release's dataset protocol) on a held-in-memory split.

  Every process holds the whole split and computes the same metrics; the
  forward pass is sharded over all devices of all processes.
  """
  accumulator = metrics.DatasetMetrics()
  replicated = NamedSharding(sharding.mesh, PartitionSpec())
  predict = jax.jit(functools.partial(eval_step, model), out_shardings=replicated)
  for batch in input_pipeline.eval_batches(
    images, masks, batch_size=batch_size, normalization=normalization
  ):
    probs = _to_host(predict(variables, _global_batch(batch["image"], sharding), walk_key))
    for prob, mask, valid in zip(probs, batch["mask"], batch["valid"], strict=True):
      if valid:
        accumulator.update(prob, mask)
  import warnings  # noqa: PLC0415

  with warnings.catch_warnings():
    warnings.simplefilter("ignore", metrics.MetricWarning)
    return accumulator.result()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains per ``config``, writing checkpoints and events to ``workdir``.

  Returns:
    ``{"state": final train state (host numpy), "eval": last validation metrics,
    "step": final step, "train_losses": the mean losses logged every log_every_steps}``.
  """
  validate_config(config)
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    checkpoint_lib.write_config(workdir, config)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)

  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  data_sharding = NamedSharding(mesh, PartitionSpec("data"))
  replicated = NamedSharding(mesh, PartitionSpec())

  image_size = tuple(int(s) for s in config.preprocess.image_size)
  train_examples, skipped = None, []
  if config.data.pipeline == "memory":
    native = config.data.resize_policy == "random_crop"
    *train_examples, skipped = input_pipeline.load_split(
      config.data, config.data.train_split, image_size, native=native
    )
  eval_images, eval_masks, eval_skipped = input_pipeline.load_split(
    config.data, config.data.eval_split, image_size
  )
  for path, reason in skipped + eval_skipped:
    logging.warning("skipped %s: %s", path, reason)
  logging.info(
    "train %s / eval %d examples of %s",
    len(train_examples[0]) if train_examples else "streamed",
    len(eval_images),
    image_size,
  )

  model = build_model(config.model)
  optimizer = make_optimizer(config)
  root = jax.random.key(config.seed)
  init_key, walk_key = jax.random.split(root)
  variables = init_model(model, init_key, (1, *image_size, 3))
  if config.get("init_from"):
    from sdpal_jax import torch_import  # noqa: PLC0415

    with ocp.StandardCheckpointer() as ckptr:
      backbone = ckptr.restore(os.path.abspath(config.init_from))
    variables = torch_import.merge_backbone_variables(variables, backbone)
  state = {
    "params": variables["params"],
    "batch_stats": variables["batch_stats"],
    "opt_state": optimizer.init(variables["params"]),
    "step": jnp.zeros((), jnp.int32),
  }
  state = jax.device_put(state, replicated)

  latest = checkpoint_lib.checkpoint_manager(
    os.path.join(workdir, checkpoint_lib.LATEST_DIR),
    max_to_keep=config.keep_checkpoints,
    item_names=(checkpoint_lib.MODEL_ITEM, TRAIN_ITEM),
  )
  best = checkpoint_lib.checkpoint_manager(
    os.path.join(workdir, checkpoint_lib.BEST_DIR),
    max_to_keep=1,
    item_names=(checkpoint_lib.MODEL_ITEM, TRAIN_ITEM),
  )
  if latest.latest_step() is not None:
    logging.info("resuming from step %d in %s", latest.latest_step(), workdir)
    state = jax.device_put(_restore(latest, latest.latest_step(), state), replicated)
  best_f1 = -1.0
  best_file = os.path.join(workdir, "best_f1.txt")
  if os.path.exists(best_file):
    best_f1 = float(open(best_file).read())

  step_fn = jax.jit(
    functools.partial(
      train_step,
      model,
      optimizer,
      float(config.loss.dice_weight),
      positive_weight=float(config.loss.get("positive_weight", 1.0)),
    ),
    in_shardings=(replicated, data_sharding, replicated),
    out_shardings=(replicated, replicated),
    donate_argnums=(0,),
  )
  start = int(_to_host(state["step"]))
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
  if jax.process_index() == 0:
    hooks.append(periodic_actions.ReportProgress(num_train_steps=total, writer=writer))
    if config.get("profile_steps"):
      hooks.append(periodic_actions.Profile(num_profile_steps=config.profile_steps, logdir=workdir))
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
      writer.write_scalars(step, scalars)
      logged_losses.append(scalars["train_loss"])
      pending = []
    if step % config.eval_every_steps == 0 or step == total:
      eval_metrics = evaluate(
        model,
        {"params": state["params"], "batch_stats": state["batch_stats"]},
        eval_images,
        eval_masks,
        batch_size=int(config.global_batch_size),
        normalization=config.preprocess.normalization,
        sharding=data_sharding,
        walk_key=walk_key,
      )
      writer.write_scalars(
        step, {f"val_{k}": float(eval_metrics[k]) for k in ("pixel_f1", "pixel_auc")}
      )
      if eval_metrics["pixel_f1"] > best_f1:
        best_f1 = float(eval_metrics["pixel_f1"])
        _save(best, step, state)
        best.wait_until_finished()
        if jax.process_index() == 0:
          with open(best_file, "w") as f:
            f.write(repr(best_f1))
    if step % config.checkpoint_every_steps == 0 or step == total or preemption.requested:
      _save(latest, step, state)
    if preemption.requested:
      break
  latest.wait_until_finished()
  latest.close()
  best.close()
  writer.flush()
  return {
    "state": _to_host(state),
    "eval": eval_metrics,
    "step": step,
    "train_losses": logged_losses,
  }


FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints and TensorBoard events.")


def main(argv) -> int:
  from ml_collections import config_flags  # noqa: PLC0415

  del argv, config_flags
  if not FLAGS.workdir:
    print(
      "usage: python -m sdpal_jax.train --config configs/NAME.py --workdir DIR", file=sys.stderr
    )
    return 2
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize()
  try:
    train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except SdpalError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


def run_main() -> None:
  from ml_collections import config_flags  # noqa: PLC0415

  if "config" not in FLAGS:
    config_flags.DEFINE_config_file(
      "config", None, "Training configuration file.", lock_config=True
    )
  app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
  run_main()
