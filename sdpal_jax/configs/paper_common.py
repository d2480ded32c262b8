"""The SDPAL release's training setup, shared by the per-dataset paper configs.

Every choice below either is the release's (GCLion/SDPAL at its published
commit; ``file Lnn`` cites its line) or says that it is ours and why.

The release's (main.py trains ``FakeLocator(512, 1)``, main.py L177):
- network: ResNet-101 with the deep "v1c" stem at output stride 8, from
  ImageNet weights (sdpal.py L316-322; resnet.py L23, L261-276); 512-channel
  correlation maps (sdpal.py L87-106), 8 attention heads (sdpal.py L344),
  U-Net widths 64/128/256/256 (sdpal.py L270-281), walk: 3 steps, restart
  0.3 (its ``walk_restart_prob=0.7`` is the probability of walking on),
  threshold 0.4 (sdpal.py L349-353). Output 256x256 (sdpal.py L259, L284),
  which equals our input size here, so ``output_size=None`` gives the same.
- initialisation: PyTorch's defaults for every layer the ImageNet file does
  not cover; the release re-initialises nothing (resnet.py and sdpal.py have
  no init code; base_model.py's kaiming init belongs to a class main.py never
  uses), hence ``model.init = "pytorch"``. The backbone comes from
  ``init_from`` (below).
- input: each photo and mask resized to 256x256 with PIL bilinear
  (``transforms.Resize``, main.py L19, L49-50), masks then ``> 128``
  (main.py L58), pixels fed as raw 0..255 floats, no normalisation and no
  augmentation (main.py L56-60; no transform is passed, L185). Authentic
  photos train with all-zero masks (main.py L41-46).
- optimisation: batch 16, shuffled each epoch, last partial batch kept
  (main.py L188); Adam at lr 1e-4 with torch's defaults and no schedule, no
  weight decay, no clipping (main.py L202; optax's ``adam`` has the same
  b1/b2/eps and bias correction, checked step by step in
  tests/test_release_training_parity.py); BatchNorm momentum 0.1 / eps 1e-5
  (torch's defaults; flax momentum 0.9), running variance updated with the
  unbiased batch variance as torch (sdpal_jax.models.layers).
- loss: ``torch.sigmoid`` of the logits (main.py L78) fed to
  ``BCEWithLogitsDiceLoss(bce_weight=1.0, dice_weight=0.0)`` (main.py L201),
  which despite its name applies ``nn.BCELoss`` to what it is given
  (sdpal.py L430-453): the loss is BCE of sigmoid probabilities, log clamped
  at -100, Dice weight 0: ``loss.form="release"``, whose values and
  gradients match torch's (tests/test_release_training_parity.py, saturated
  logits included). Saturation: once a logit passes ~+16.6 float32 sigmoid
  is exactly 1, so a pixel that should be 0 costs 100 with zero gradient (it
  can no longer be corrected); below ~-27.6 torch's backward (a division by
  max(p(1 - p), 1e-12)) makes the gradient of a pixel that should be 1
  vanish as well. ``loss.form="logits"``, the stable BCE-with-logits, has
  the same values and gradients while |logit| < ~16 but keeps gradient +-1
  on a wrong pixel at any confidence.
- validation: every epoch (main.py L206-209) in eval mode at the 256x256
  input size, threshold 0.5, TP/FP/FN and the AUC pooled over the whole
  validation set (main.py L97-166): ``protocol="dataset"`` at
  ``resolution="release"``; the checkpoint with the best F1 is kept
  (main.py L213-221).
- precision: float32 (no autocast in main.py). With ``:gpu`` every matmul and
  convolution runs at full float32 (``matmul_precision="highest"``); JAX's
  default on Ampere/Hopper GPUs is TF32 and on TPUs bfloat16 passes. (The
  release on a GPU would run its convolutions in TF32, cuDNN's default in
  torch, and its matmuls in float32.)

Ours, and why:
- length: the release loops for "5000 epochs" (main.py L172) until it is
  stopped by hand, keeping the best validation F1; a run here is a fixed
  number of epochs (each paper config says how many; a budget, not a number
  from the paper or the release), the best checkpoint kept the same way.
- splits: the release's lists are published for CASIA v2 only
  (data/lst/CASIA_v2_{train,valid}.lst, 11,294 / 1,255 lines); elsewhere the
  builders' own train/validation splits (each config says which).
- seed 0 (the release seeds nothing), a checkpoint every epoch (the release
  saves only its best), a log line every 50 steps.

Variant grammar (the config argument, comma separated):
  ``gpu``      float32 compute at full float32 matmul/conv precision, global
               batch 16 on one GPU (the release's run);
  ``gpu_tf32`` as ``gpu`` with TF32 matmuls/convolutions (faster on
               Ampere/Hopper, ~10-bit mantissa products);
  ``tpu``      bfloat16 compute; the global batch of 16 is split 2 per core
               over 8 TPU cores (BatchNorm statistics stay those of the
               global batch);
  ``bf16``     bfloat16 compute on any device (params stay float32).
The ImageNet backbone: ``python -m sdpal_jax.pretrained --output_dir
resnet101_v1c`` downloads the file the release loads, checks its hash and
converts it; the paper configs' ``init_from`` names that directory
(relative to where training starts: pass ``--config.init_from=DIR`` for
another place).
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
  c.loss.form = "release"  # sigmoid, then BCE with logs clamped at -100 (module docstring)
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
