"""Model and preprocessing configuration (ml_collections), shared by every entry point.

A checkpoint directory stores these two dicts (``config.json``), so that
``predict`` and ``evaluate`` rebuild exactly the network and the input
transformation that produced the weights.
"""

from __future__ import annotations

import math
import numbers

import ml_collections

from sdpal_jax.errors import ConfigError
from sdpal_jax.ops.correlation import DEFAULT_BLOCK_SIZE, DEFAULT_SIMILARITY_CACHE_MIB

WALK_METHODS = ("dense", "blocked", "sampled")
NORMALIZATIONS = ("raw", "imagenet")
RESNET_DEPTHS = (18, 34, 50, 101, 152)
OUTPUT_STRIDES = (8, 16, 32)
DTYPES = ("float32", "bfloat16")
INITS = ("flax", "pytorch")
CONV_IMPLS = ("auto", "xla", "matmul_grads")  # sdpal_jax.ops.convolution.CONV_IMPLS
NOISE_RESIDUALS = ("none", "srm")


def default_model_config() -> ml_collections.ConfigDict:
  """The SDPAL network as the PyTorch release builds it.

  GCLion/SDPAL ``sdpal.py`` ``FakeLocator`` on the ``resnet.py`` backbone
  (ResNet-101 v1c, output stride 8), except ``output_size`` (see
  ``release_model_config``).

  Returns:
    A ConfigDict; every hyper-parameter of the network lives here.
  """
  c = ml_collections.ConfigDict()
  # MOPC: backbone and feature alignment.
  c.backbone_depth = 101
  c.deep_stem = True  # "v1c": three 3x3 convs instead of one 7x7.
  c.stem_channels = 64
  c.base_channels = 64
  c.output_stride = 8
  c.contract_dilation = True
  c.feature_channels = 512  # width of the aligned / fused correlation map.
  # MOAP: neighbouring-pixel residual and random walk with restart.
  c.walk = ml_collections.ConfigDict()
  c.walk.method = "dense"  # dense | blocked | sampled
  c.walk.steps = 3
  c.walk.restart = 0.3  # 1 - a; the release's walk_restart_prob=0.7 is a.
  c.walk.threshold = 0.4
  # "blocked": nodes per block; holds O(N x block_size) similarities.
  c.walk.block_size = DEFAULT_BLOCK_SIZE
  # "blocked", inference only: keep the distinct block pairs' similarities (~B N^2 / 2
  # floats for the batch) across the walk steps when they fit in this many MiB: 3.5
  # instead of 4.5 N^2 D multiply-adds for 3 steps. 0: recompute them every step (as
  # training always does). Configs without the field get this default.
  c.walk.similarity_cache_mib = DEFAULT_SIMILARITY_CACHE_MIB
  c.walk.num_landmarks = 1024  # "sampled" only: nodes sampled per walk step.
  # "sampled" only: sampled | exact (unbiased, one O(N^2) pass).
  c.walk.row_normalization = "sampled"
  # DPAL: differential attention.
  c.attention_heads = 8
  # Decoder: U-Net widths (inc, down1, down2, down3); ups mirror them.
  c.decoder_channels = (64, 128, 256, 256)
  # Output logits at the input's size (None) or a fixed (H, W) as the release; a typed
  # None, so that --config.model.output_size="(H, W)" can set it from the command line.
  c.output_size = ml_collections.config_dict.placeholder(tuple)
  # Extra input channels for the backbone: "none" (the release: RGB only) or "srm" (the
  # three fixed SRM high-pass residuals of each colour channel, batch-normalised and
  # concatenated to the RGB input; sdpal_jax.ops.noise_residual). Not the release's:
  # a release checkpoint converts only with "none". Configs without the field get "none".
  c.noise_residual = "none"
  # Numerics.
  c.dtype = "float32"  # compute dtype; params stay float32.
  # Initialisation of every conv: "flax" (LeCun-normal kernels, zero biases) or
  # "pytorch" (torch's defaults, which the release never overrides: kernels and
  # biases uniform in +-1/sqrt(fan_in)); a converted backbone replaces the backbone's.
  c.init = "flax"
  # How convolutions and their gradients are computed (same parameters, same results
  # to float rounding): "xla" (lax.conv_general_dilated, jax's gradients),
  # "matmul_grads" (sdpal_jax.ops.conv2d: 1x1 convs as matrix products, matrix-product
  # kernel gradients for wide kernels; faster training on XLA:CPU, measured in
  # docs/performance.md) or "auto" (matmul_grads on the CPU backend, xla on GPU/TPU).
  # Configs without the field get this default.
  c.conv_impl = "auto"
  c.bn_momentum = 0.9  # flax convention: torch momentum 0.1.
  c.bn_epsilon = 1e-5
  return c


def release_model_config() -> ml_collections.ConfigDict:
  """The release's network, including its fixed 256x256 output."""
  c = default_model_config()
  c.output_size = (256, 256)
  return c


def default_preprocess_config() -> ml_collections.ConfigDict:
  """How raw uint8 photos become network input.

  ``image_size``: (H, W) every image is resized to (bilinear), or None to feed
  the image at its own size. ``normalization``: "raw" feeds 0..255 floats as
  the release does; "imagenet" subtracts the ImageNet mean and divides by the
  std (in 0..255 units).
  """
  c = ml_collections.ConfigDict()
  c.image_size = (256, 256)
  c.normalization = "raw"
  # At full resolution, photos larger than this many pixels a side are predicted in
  # overlapping tiles; None: sdpal_jax.inference.DEFAULT_TILE_SIZE. A typed None, so that
  # --config.preprocess.tile_size=N can set it. Training does not read it.
  c.tile_size = ml_collections.config_dict.placeholder(int)
  return c


def validate_model_config(c: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first invalid field."""

  def bad(field, value, allowed):
    raise ConfigError(f"model.{field}={value!r} is invalid; expected {allowed}.")

  if c.backbone_depth not in RESNET_DEPTHS:
    bad("backbone_depth", c.backbone_depth, f"one of {RESNET_DEPTHS}")
  if c.output_stride not in OUTPUT_STRIDES:
    bad("output_stride", c.output_stride, f"one of {OUTPUT_STRIDES}")
  if c.walk.method not in WALK_METHODS:
    bad("walk.method", c.walk.method, f"one of {WALK_METHODS}")
  if not 0.0 <= c.walk.restart <= 1.0:
    bad("walk.restart", c.walk.restart, "a probability in [0, 1]")
  if c.walk.steps < 0:
    bad("walk.steps", c.walk.steps, "a non-negative integer")
  if c.walk.block_size < 1:
    bad("walk.block_size", c.walk.block_size, "a positive integer")
  if c.walk.get("similarity_cache_mib", 0) < 0:
    bad("walk.similarity_cache_mib", c.walk.similarity_cache_mib, "a non-negative number of MiB")
  if c.walk.num_landmarks < 1:
    bad("walk.num_landmarks", c.walk.num_landmarks, "a positive integer")
  if c.walk.row_normalization not in ("sampled", "exact"):
    bad("walk.row_normalization", c.walk.row_normalization, "'sampled' or 'exact'")
  if c.feature_channels % c.attention_heads:
    bad("attention_heads", c.attention_heads, f"a divisor of feature_channels={c.feature_channels}")
  if c.dtype not in DTYPES:
    bad("dtype", c.dtype, f"one of {DTYPES}")
  if c.get("init", "flax") not in INITS:
    bad("init", c.init, f"one of {INITS}")
  if c.get("conv_impl", "auto") not in CONV_IMPLS:
    bad("conv_impl", c.conv_impl, f"one of {CONV_IMPLS}")
  if c.get("noise_residual", "none") not in NOISE_RESIDUALS:
    bad("noise_residual", c.noise_residual, f"one of {NOISE_RESIDUALS}")
  if c.output_size is not None and len(tuple(c.output_size)) != 2:
    bad("output_size", c.output_size, "None or (height, width)")
  if not 0.0 <= c.get("bn_momentum", 0.9) <= 1.0:
    bad("bn_momentum", c.bn_momentum, "a number in [0, 1] (flax convention: 0.9)")
  if not c.get("bn_epsilon", 1e-5) > 0:
    bad("bn_epsilon", c.bn_epsilon, "a number > 0")


def validate_preprocess_config(c: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first invalid preprocessing field."""
  if c.normalization not in NORMALIZATIONS:
    raise ConfigError(
      f"preprocess.normalization={c.normalization!r} is invalid; expected one of {NORMALIZATIONS}."
    )
  tile_size = c.get("tile_size")
  if tile_size is not None and (not _is_integer(tile_size) or tile_size < 0):
    raise ConfigError(
      f"preprocess.tile_size={tile_size!r} is invalid; expected None or a number of pixels >= 0."
    )
  if c.image_size is not None and (len(tuple(c.image_size)) != 2 or min(c.image_size) < 8):
    raise ConfigError(
      f"preprocess.image_size={c.image_size!r} is invalid; expected None or (height, width) >= 8."
    )


def _non_finite_fields(value, path: str):
  """``(dotted path, value)`` of every NaN or infinite float inside a config value."""
  if isinstance(value, (ml_collections.ConfigDict, dict)):
    for key, item in value.items():
      yield from _non_finite_fields(item, f"{path}.{key}" if path else str(key))
  elif isinstance(value, (list, tuple)):
    for index, item in enumerate(value):
      yield from _non_finite_fields(item, f"{path}[{index}]")
  elif isinstance(value, float) and not math.isfinite(value):
    yield path, value


def _is_integer(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def validate_config_values(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first training field whose value makes no sense.

  Every float must be finite; the learning rate, the loss's positive weight and
  the step counts must be positive; decay, clipping, Dice weight and warmup
  must not be negative (0 turns them off); a warmup longer than the run never
  reaches the learning rate; thresholds are probabilities in [0, 1). Fields a
  config lacks are not checked (older configs).
  """
  for path, value in _non_finite_fields(config, ""):
    raise ConfigError(f"{path}={value!r} must be a finite number.")

  def need(path: str, ok, expected: str) -> None:
    node = config
    for key in path.split("."):
      if key not in node:
        return
      node = node[key]
    if not ok(node):
      raise ConfigError(f"{path}={node!r} must be {expected}.")

  def positive_number(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and v > 0

  def non_negative_number(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and v >= 0

  need("optimizer.learning_rate", positive_number, "a number > 0 (e.g. 1e-4)")
  need("optimizer.weight_decay", non_negative_number, "a number >= 0 (0: no decay)")
  need("optimizer.grad_clip", non_negative_number, "a number >= 0 (0: no clipping)")
  need("optimizer.warmup_steps", lambda v: _is_integer(v) and v >= 0, "an integer >= 0")
  need("optimizer.accumulation_steps", lambda v: _is_integer(v) and v >= 1, "a positive integer")
  need("loss.positive_weight", positive_number, "a number > 0 (1: unweighted)")
  need("loss.dice_weight", non_negative_number, "a number >= 0 (0: no Dice term)")
  for field in (
    "num_train_steps",
    "global_batch_size",
    "log_every_steps",
    "eval_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "data.shuffle_buffer",
  ):
    need(field, lambda v: _is_integer(v) and v >= 1, "a positive integer")
  for field in ("num_eval_images", "profile_steps"):
    need(field, lambda v: _is_integer(v) and v >= 0, "an integer >= 0")
  need("data.max_examples", lambda v: v is None or (_is_integer(v) and v >= 1), "None or >= 1")
  optimizer = config.get("optimizer", {})
  steps = config.get("num_train_steps")
  if (
    optimizer.get("schedule") == "warmup_cosine"
    and _is_integer(steps)
    and optimizer.get("warmup_steps", 0) > steps
  ):
    raise ConfigError(
      f"optimizer.warmup_steps={optimizer.warmup_steps} is longer than num_train_steps={steps}: "
      "the learning rate would never reach optimizer.learning_rate; shorten the warmup."
    )
  for index, entry in enumerate(config.get("evals", ())):
    where = f"evals[{index}]"
    threshold = entry.get("threshold", 0.5)
    if not (non_negative_number(threshold) and threshold < 1):
      raise ConfigError(f"{where}.threshold={threshold!r} must be a probability in [0, 1).")
    for field in ("max_examples", "batch_size"):
      value = entry.get(field, 0)
      if not (_is_integer(value) and value >= 0):
        raise ConfigError(f"{where}.{field}={value!r} must be an integer >= 0 (0: all).")
