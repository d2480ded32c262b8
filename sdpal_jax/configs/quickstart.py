"""The embedded default: SDPAL on the locally generated synthetic_forgery set, on a 2-core CPU.

  bash tools/quickstart.sh     # or: sdpal-train --config quickstart --workdir W

A ResNet-18 (deep stem, output stride 8) backbone and a 64-channel
correlation map keep the release's structure (MOPC, MOAP with the full
random walk, DPAL, U-Net decoder) at a size a laptop CPU trains in minutes.
``base_channels=32`` halves every backbone width: steps are much faster than
at 64 for the same F1 after the same time. The tampered pixels are weighted in
the BCE (with a Dice term) because they are few; without it the F1 at the 0.5
threshold stays near 0. The data are ``mixed_small_unwarped``: half the
pasted regions are only moved, never resampled, as most of CASIA v1.0's are;
on CASIA v1 that raised the position-out pixel AUC from 0.55 to 0.58 (mean of
seeds 0 and 1) over the same runs on ``mixed_small``, and lowered the F1 at
0.5 (docs/results/real_data, "The quickstart on unwarped data").

Variants (the config argument, comma separated): ``tpu`` a wider model and
batch for 8 TPU cores (bfloat16 compute); ``bf16`` bfloat16 compute with the
CPU model (parameters stay float32); ``native`` trains on 128x128 crops of the
generated photos at their own scale instead of the photos resized to 128x128,
and the model then sees every photo at its own size (``preprocess.image_size``
None), so camera-scale traces (sensor noise, the 8x8 JPEG grid) are never
resampled away.

Time end to end and the scores on the generated test split:
docs/performance.md ("The quickstart, end to end"); on real forgeries (CASIA
v1, COVERAGE): docs/results/real_data.
"""

import ml_collections

from sdpal_jax.configs.common import base_config, parse_variants


def get_config(arg=None):
  variants = parse_variants(arg, ("tpu", "bf16", "native"))
  c = base_config()
  c.model.backbone_depth = 18
  c.model.base_channels = 32
  c.model.feature_channels = 64
  c.model.attention_heads = 4
  c.model.decoder_channels = (16, 32, 64, 64)
  c.preprocess.image_size = (128, 128)
  c.preprocess.normalization = "imagenet"
  c.data.dataset = "synthetic_forgery/mixed_small_unwarped"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.schedule = "warmup_cosine"
  c.optimizer.warmup_steps = 50
  c.optimizer.grad_clip = 1.0
  c.loss.dice_weight = 0.5
  c.loss.positive_weight = 5.0
  c.global_batch_size = 8
  c.num_train_steps = 1200
  c.log_every_steps = 20
  c.eval_every_steps = 400
  c.checkpoint_every_steps = 400
  if "native" in variants:
    # A typed None, so that --config.preprocess.image_size="(H, W)" can set it again.
    c.preprocess.image_size = ml_collections.config_dict.placeholder(tuple)
    c.data.resize_policy = "random_crop"
    c.data.crop_size = (128, 128)
  if "bf16" in variants:
    c.model.dtype = "bfloat16"
  if "tpu" in variants:
    c.model.base_channels = 64
    c.model.feature_channels = 256
    c.model.decoder_channels = (64, 128, 256, 256)
    c.model.dtype = "bfloat16"
    c.preprocess.image_size = (256, 256)
    c.data.dataset = "synthetic_forgery/mixed"
    c.global_batch_size = 64
    c.num_train_steps = 3000
    c.eval_every_steps = 500
    c.checkpoint_every_steps = 500
  return c
