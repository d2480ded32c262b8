"""The SDPAL release's training setup, shared by the per-dataset paper configs.

``paper_config`` sets every field as the PyTorch release (GCLion/SDPAL)
trains: the ResNet-101 v1c network at output stride 8 from ImageNet weights
with PyTorch's default initialisation elsewhere, 256x256 raw-pixel inputs
without augmentation, batch 16, Adam at 1e-4, the release's sigmoid-then-BCE
loss (``loss.form="release"``), validation once an epoch at the release's
resolution keeping the best pixel F1. docs/reproducing.md gives each choice
with the release's file and line, and what is ours and why (a fixed number of
epochs, the splits, the seed).

Variants (the config argument, comma separated): ``gpu`` full float32
matmul/conv precision on one GPU (the release's run), ``gpu_tf32`` the same
with TF32, ``tpu`` bfloat16 over 8 TPU cores, ``bf16`` bfloat16 on any device.
The ImageNet backbone (``init_from``): ``sdpal-pretrained --output_dir
resnet101_v1c`` downloads the file the release loads, checks its hash and
converts it.
"""

from __future__ import annotations

import math

import ml_collections

from sdpal_jax.configs.common import base_config, evaluation
from sdpal_jax.errors import ConfigError

VARIANTS = ("gpu", "gpu_tf32", "tpu", "bf16")


def paper_config(
  *,
  dataset: str,
  num_train_examples: int,
  epochs: int,
  variants: list[str],
  train_split: str = "train",
  eval_split: str = "validation",
) -> ml_collections.ConfigDict:
  """The release's setup on ``dataset`` (a tfds name), for ``epochs`` passes."""
  if "gpu" in variants and "gpu_tf32" in variants:
    raise ConfigError("name one of the variants gpu and gpu_tf32.")
  c = base_config()
  c.model.backbone_depth = 101
  c.model.deep_stem = True
  c.model.output_stride = 8
  c.model.feature_channels = 512
  c.model.attention_heads = 8
  c.model.decoder_channels = (64, 128, 256, 256)
  c.model.walk.steps = 3
  c.model.walk.restart = 0.3
  c.model.walk.threshold = 0.4
  # None: logits at the input size (256x256 = the release's output size); a placeholder so that
  # --config.model.output_size="(H, W)" can still set it.
  c.model.output_size = ml_collections.config_dict.placeholder(tuple)
  c.model.init = "pytorch"
  c.model.bn_momentum = 0.9
  c.model.bn_epsilon = 1e-5
  c.preprocess.image_size = (256, 256)
  c.preprocess.normalization = "raw"
  c.data.dataset = dataset
  c.data.train_split = train_split
  c.data.eval_split = eval_split
  c.data.resize_policy = "resize"
  c.data.augment.hflip = False  # the release does not augment
  c.optimizer.learning_rate = 1e-4
  c.optimizer.schedule = "constant"
  c.optimizer.weight_decay = 0.0
  c.optimizer.grad_clip = 0.0
  c.loss.form = "release"  # sigmoid, then BCE with logs clamped at -100 (docs/reproducing.md)
  c.loss.dice_weight = 0.0
  c.loss.positive_weight = 1.0
  c.global_batch_size = 16
  steps_per_epoch = math.ceil(num_train_examples / c.global_batch_size)
  c.num_train_steps = epochs * steps_per_epoch
  c.eval_every_steps = steps_per_epoch  # once an epoch, as the release
  c.evals = [evaluation("validation", "", resolution="release", protocol="dataset")]
  c.best_metric = "validation/pixel_f1"
  c.checkpoint_every_steps = steps_per_epoch
  c.log_every_steps = 50
  c.seed = 0
  c.init_from = "resnet101_v1c"  # python -m sdpal_jax.pretrained --output_dir resnet101_v1c
  c.matmul_precision = "default"
  if "gpu" in variants:
    c.matmul_precision = "highest"
  if "gpu_tf32" in variants:
    c.matmul_precision = "tensorfloat32"
  if "tpu" in variants or "bf16" in variants:
    c.model.dtype = "bfloat16"
  return c
