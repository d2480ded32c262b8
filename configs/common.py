"""Pieces shared by the training configs (imported by path-loaded config files)."""

from __future__ import annotations

import ml_collections

from sdpal_jax import input_pipeline, model_config


def base_config() -> ml_collections.ConfigDict:
  """Every training field with the release's defaults (Adam 1e-4, BCE, 256x256 raw pixels)."""
  c = ml_collections.ConfigDict()
  c.model = model_config.default_model_config()
  c.preprocess = model_config.default_preprocess_config()
  c.data = input_pipeline.default_data_config()
  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.learning_rate = 1e-4
  c.optimizer.schedule = "constant"  # constant | cosine | warmup_cosine
  c.optimizer.warmup_steps = 0
  c.optimizer.weight_decay = 0.0
  c.optimizer.grad_clip = 0.0
  c.loss = ml_collections.ConfigDict()
  c.loss.dice_weight = 0.0
  c.loss.positive_weight = 1.0  # BCE weight of tampered pixels (torch pos_weight)
  c.seed = 0
  c.global_batch_size = 16
  c.num_train_steps = 10_000
  c.log_every_steps = 50
  c.eval_every_steps = 1000
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  c.init_from = (
    ""  # converted ImageNet backbone (tools/convert_torch_checkpoint.py --kind backbone)
  )
  c.profile_steps = 0
  return c
