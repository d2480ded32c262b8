"""The SDPAL release's training setup, shared by the per-dataset paper configs.

The release (GCLion/SDPAL ``main.py``) trains ``FakeLocator``: ResNet-101 v1c
backbone at output stride 8 with ImageNet weights, every image resized to
256x256 and fed as raw 0..255 floats, batch 16, Adam at lr 1e-4 with no
schedule, BCE-with-logits (its Dice weight is 0), the best epoch by
validation pixel F1 (dataset protocol) kept. It loops for up to 5000 epochs
and keeps the best; here a run is a fixed number of steps (``epochs`` times the
training split's batches) and the best checkpoint by validation F1 is kept the
same way.

Variant grammar (the config argument, comma separated):
  ``gpu``  float32 compute, global batch 16 on one GPU (the release's run);
  ``tpu``  bfloat16 compute; the global batch of 16 is split 2 per core over
           8 TPU cores (BatchNorm statistics stay those of the global batch);
  ``bf16`` bfloat16 compute on any device (params stay float32).
The ImageNet backbone: convert an mmcls ``resnet101_v1c`` file once with
``python tools/convert_torch_checkpoint.py --kind backbone --input
resnet101_v1c.pth --output /path/resnet101_v1c`` and pass
``--config.init_from=/path/resnet101_v1c``.
"""

from __future__ import annotations

import math

import ml_collections

from sdpal_jax.configs.common import base_config, evaluation

VARIANTS = ("gpu", "tpu", "bf16")


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
  c = base_config()
  c.model.backbone_depth = 101
  c.model.deep_stem = True
  c.model.output_stride = 8
  c.model.feature_channels = 512
  c.model.attention_heads = 8
  c.model.decoder_channels = (64, 128, 256, 256)
  c.model.output_size = None  # logits at 256x256 = the input: the release's output size
  c.preprocess.image_size = (256, 256)
  c.preprocess.normalization = "raw"
  c.data.dataset = dataset
  c.data.train_split = train_split
  c.data.eval_split = eval_split
  c.data.resize_policy = "resize"
  c.data.augment.hflip = False  # the release does not augment
  c.optimizer.learning_rate = 1e-4
  c.optimizer.schedule = "constant"
  c.loss.dice_weight = 0.0
  c.global_batch_size = 16
  steps_per_epoch = math.ceil(num_train_examples / c.global_batch_size)
  c.num_train_steps = epochs * steps_per_epoch
  c.eval_every_steps = steps_per_epoch  # once an epoch, as the release
  # The release scores validation at its 256x256 input size (main.py validate).
  c.evals = [evaluation("validation", "", resolution="release")]
  c.checkpoint_every_steps = steps_per_epoch
  c.log_every_steps = 50
  c.init_from = "resnet101_v1c"  # override: a converted backbone (see the module doc)
  if "tpu" in variants or "bf16" in variants:
    c.model.dtype = "bfloat16"
  return c
