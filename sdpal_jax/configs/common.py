"""Pieces shared by the training configs: every field with its default, and variant parsing."""

from __future__ import annotations

import ml_collections

from sdpal_jax import data_config, model_config
from sdpal_jax.errors import ConfigError


def parse_variants(arg: str | None, allowed: tuple[str, ...]) -> list[str]:
  """Splits a config argument ``"a,b"`` into variants, naming any that ``allowed`` lacks."""
  parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
  for part in parts:
    if part not in allowed:
      expected = ", ".join(allowed) if allowed else "none (this config takes no argument)"
      raise ConfigError(f"unknown config variant {part!r}; expected: {expected}.")
  return parts


def evaluation(
  name: str, dataset: str, *, resolution: str = "native", protocol: str = "dataset", **fields
) -> ml_collections.ConfigDict:
  """One entry of ``config.evals``: see ``sdpal_jax.evaluator.Evaluator.from_config``."""
  c = ml_collections.ConfigDict()
  c.name = name
  c.dataset = dataset  # a dataset SPEC (sdpal_jax.datasets.sources.open_source)
  c.protocol = protocol
  c.resolution = resolution
  c.max_examples = 0  # 0: the whole split
  c.batch_size = 0  # 0: the global batch size
  c.update(fields)
  return c


def base_config() -> ml_collections.ConfigDict:
  """Every training field with the release's defaults (Adam 1e-4, BCE, 256x256 raw pixels)."""
  c = ml_collections.ConfigDict()
  c.model = model_config.default_model_config()
  c.preprocess = model_config.default_preprocess_config()
  c.data = data_config.default_data_config()
  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.learning_rate = 1e-4
  c.optimizer.schedule = "constant"  # constant | cosine | warmup_cosine
  c.optimizer.warmup_steps = 0
  c.optimizer.weight_decay = 0.0
  c.optimizer.grad_clip = 0.0
  # Gradient accumulation: average the gradients of this many consecutive batches
  # of global_batch_size before each update (optax.MultiSteps). Step counts
  # (num_train_steps, warmup_steps, *_every_steps) stay in batches; see
  # train_state.make_optimizer.
  c.optimizer.accumulation_steps = 1
  c.loss = ml_collections.ConfigDict()
  c.loss.form = "logits"  # logits (stable BCE-with-logits) | release (sigmoid, then clamped BCE)
  c.loss.dice_weight = 0.0
  c.loss.positive_weight = 1.0  # BCE weight of tampered pixels (torch pos_weight)
  # Validation: each entry is scored by sdpal_jax.evaluator (the evaluator that
  # `python -m sdpal_jax.evaluate` uses); `best/` keeps the step with the best
  # `best_metric`, named "<eval name>/<metric>". An entry's dataset "" means
  # `data.dataset` with split `data.eval_split`.
  c.evals = [evaluation("validation", "")]
  c.best_metric = "validation/pixel_f1"
  c.num_eval_images = 4  # validation images (with predictions) written to TensorBoard
  c.seed = 0
  c.global_batch_size = 16
  c.num_train_steps = 10_000
  c.log_every_steps = 50
  c.eval_every_steps = 1000
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  # A converted ImageNet backbone: the directory that
  # `sdpal-convert --kind backbone --output_dir DIR` wrote (DIR or DIR/backbone).
  c.init_from = ""
  c.profile_steps = 0
  # jax_default_matmul_precision for the run (train.train_and_evaluate sets it): "default"
  # (TF32 on Ampere/Hopper GPUs, bfloat16 passes on TPUs, float32 on CPUs), "tensorfloat32",
  # "highest" (full float32 matmuls and convolutions), ...
  c.matmul_precision = "default"
  return c
