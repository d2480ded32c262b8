"""SDPAL: MOPC -> MOAP -> DPAL -> decoder, the pipeline of the paper.

The paper: "SDPAL: Spatial Difference Patterns Adaptive Learning for Image
Forgery Localization". Layer widths, orders and resizes follow its public
PyTorch release (GCLion/SDPAL, ``sdpal.py``: MOPC = ``MSCCNet``, MOAP =
``GraphRandomWalkNPR`` + ``fuse_conv``, DPAL = ``DiffAttention2D`` +
``ConvRefine``, decoder = ``UNet``; the backbone is ``resnet.py``'s) so that its
checkpoints convert one-to-one (``sdpal_jax.torch_import``).

Batch norm: under ``jax.jit`` with the batch sharded over devices, the batch
statistics are computed over the global batch (XLA inserts the reductions),
so no cross-device axis name is needed.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from sdpal_jax import ops
from sdpal_jax.errors import SdpalError
from sdpal_jax.model_config import validate_model_config
from sdpal_jax.models.layers import BatchNorm, ConvSettings
from sdpal_jax.models.resnet import ResNet
from sdpal_jax.ops.convolution import DEFAULT_CONV_IMPL
from sdpal_jax.ops.correlation import DEFAULT_SIMILARITY_CACHE_MIB


class MOPC(nn.Module):
  """Multi-order pixel correlation extraction: backbone stages 2-4, aligned and fused.

  ``[B, H, W, 3] -> [B, H/s, W/s, feature_channels]`` (s = output stride).
  """

  backbone: ResNet
  feature_channels: int = 512
  conv: ConvSettings = ConvSettings()

  @nn.compact
  def __call__(self, images, train: bool):
    _, f1, f2, f3 = self.backbone(images, train)
    aligned = [
      self.conv.conv_bn(self.feature_channels, 3, name=f"align{i + 1}")(f, train)
      for i, f in enumerate((f1, f2, f3))
    ]
    target = aligned[0].shape[1:3]
    aligned = [
      a if a.shape[1:3] == target else ops.resize_bilinear_align_corners(a, target) for a in aligned
    ]
    fusion = self.conv.conv_bn(self.feature_channels, 3, name="fusion")
    return fusion(jnp.concatenate(aligned, -1), train)


class MOAP(nn.Module):
  """Multi-order adjacent pixel correlation modelling: NPR + random walk over the pixel graph.

  ``F [B, h, w, C] -> [B, h, w, C]``: ``fuse(concat(F, R, G))`` with
  ``R = NPR(F)`` and ``G = RWR(concat(F, R))``.
  """

  feature_channels: int = 512
  walk_method: str = "dense"
  walk_steps: int = 3
  walk_restart: float = 0.3
  walk_threshold: float = 0.4
  walk_options: tuple = ()
  conv: ConvSettings = ConvSettings()

  @nn.compact
  def __call__(self, features, train: bool):
    f = features.astype(jnp.float32)
    residual = ops.neighbour_pixel_residual(f)
    nodes = jnp.concatenate([f, residual], axis=-1)
    options = dict(self.walk_options)
    if train and "similarity_cache_mib" in options:
      # Under jax.grad the cached similarities' cotangents cost several times the
      # cache (docs/performance.md): training recomputes them.
      options["similarity_cache_mib"] = 0
    if self.walk_method == "sampled":
      options["key"] = self.make_rng("walk")
    walked = ops.random_walk_with_restart(
      nodes,
      steps=self.walk_steps,
      restart=self.walk_restart,
      threshold=self.walk_threshold,
      method=self.walk_method,
      **options,
    )
    combined = jnp.concatenate([f, residual, walked], axis=-1).astype(self.conv.dtype)
    return self.conv.conv_bn(self.feature_channels, 1, name="fuse")(combined, train)


class DPAL(nn.Module):
  """Difference pattern adaptive learning: differential attention + refinement, both residual."""

  num_heads: int = 8
  conv: ConvSettings = ConvSettings()

  @nn.compact
  def __call__(self, x, train: bool):
    b, h, w, c = x.shape
    flat = x.reshape(b, h * w, c)
    conv = self.conv
    q1, k1, q2, k2, v = (
      conv.conv1x1(c, use_bias=False, fan_in=c, name=name)(flat)
      for name in ("to_q1", "to_k1", "to_q2", "to_k2", "to_v")
    )
    attended = ops.differential_attention(q1, k1, q2, k2, v, self.num_heads)
    unify = conv.conv1x1(c, use_bias=True, fan_in=c, name="unify")
    x = x + unify(attended).reshape(b, h, w, c)
    refined = conv.conv_bn(c, 3, use_bias=True, name="refine1")(x, train)
    refined = conv.conv_bn(c, 3, use_bias=True, name="refine2")(refined, train)
    return x + refined


class DoubleConv(nn.Module):
  """(3x3 conv, no bias -> BN -> ReLU) x 2."""

  features: int
  mid_features: int | None = None
  conv: ConvSettings = ConvSettings()

  @nn.compact
  def __call__(self, x, train: bool):
    x = self.conv.conv_bn(self.mid_features or self.features, 3, name="conv1")(x, train)
    return self.conv.conv_bn(self.features, 3, name="conv2")(x, train)


def _up_and_concat(x, skip):
  """x2 bilinear (align_corners) upsample of ``x``, padded to ``skip``'s size, ``concat(skip, x)``."""
  x = ops.resize_bilinear_align_corners(x, (2 * x.shape[1], 2 * x.shape[2]))
  dy, dx = skip.shape[1] - x.shape[1], skip.shape[2] - x.shape[2]
  x = jnp.pad(x, ((0, 0), (dy // 2, dy - dy // 2), (dx // 2, dx - dx // 2), (0, 0)))
  return jnp.concatenate([skip, x], axis=-1)


def _max_pool_2x2(x):
  return nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")


class Decoder(nn.Module):
  """The release's small U-Net: ``[B, h, w, C] -> [B, H_out, W_out]`` logits."""

  channels: tuple[int, int, int, int] = (64, 128, 256, 256)
  conv: ConvSettings = ConvSettings()

  @nn.compact
  def __call__(self, x, output_size: tuple[int, int], train: bool):
    c0, c1, c2, c3 = self.channels
    conv = self.conv
    x1 = DoubleConv(c0, name="inc", conv=conv)(x, train)
    x2 = DoubleConv(c1, name="down1", conv=conv)(_max_pool_2x2(x1), train)
    x3 = DoubleConv(c2, name="down2", conv=conv)(_max_pool_2x2(x2), train)
    x4 = DoubleConv(c3, name="down3", conv=conv)(_max_pool_2x2(x3), train)
    y = _up_and_concat(x4, x3)
    y = DoubleConv(c1, y.shape[-1] // 2, name="up1", conv=conv)(y, train)
    y = _up_and_concat(y, x2)
    y = DoubleConv(c0, y.shape[-1] // 2, name="up2", conv=conv)(y, train)
    y = _up_and_concat(y, x1)
    y = DoubleConv(c0, y.shape[-1] // 2, name="up3", conv=conv)(y, train)
    logits = self.conv.conv1x1(1, use_bias=True, fan_in=y.shape[-1], name="outc")(y)
    logits = ops.resize_bilinear_align_corners(logits.astype(jnp.float32), output_size)
    return logits[..., 0]


class SDPAL(nn.Module):
  """The whole network: uint8-derived images ``[B, H, W, 3]`` -> logits ``[B, H', W']``.

  ``H' x W'`` is ``output_size`` when set (the release: 256x256), else the
  input's own size. For ``walk_method="sampled"`` pass ``rngs={"walk": key}``.
  """

  backbone_depth: int = 101
  deep_stem: bool = True
  stem_channels: int = 64
  base_channels: int = 64
  output_stride: int = 8
  contract_dilation: bool = True
  feature_channels: int = 512
  walk_method: str = "dense"
  walk_steps: int = 3
  walk_restart: float = 0.3
  walk_threshold: float = 0.4
  walk_options: tuple = ()
  attention_heads: int = 8
  decoder_channels: tuple[int, int, int, int] = (64, 128, 256, 256)
  output_size: tuple[int, int] | None = None
  noise_residual: str = "none"  # "none" | "srm": extra input channels (sdpal_jax.model_config)
  dtype: Any = jnp.float32
  weight_init: str = "flax"  # "flax" | "pytorch": layer initialisation (sdpal_jax.models.layers)
  # "auto" | "xla" | "matmul_grads": how convolutions and their gradients are computed
  # (sdpal_jax.models.layers; the parameters are the same under all).
  conv_impl: str = DEFAULT_CONV_IMPL
  bn: tuple = (("momentum", 0.9), ("epsilon", 1e-5))

  @property
  def smallest_input(self) -> int:
    """Pixels each side of an input needs: the decoder halves the feature map three times."""
    return 8 * self.output_stride

  @property
  def conv_settings(self) -> ConvSettings:
    """What every convolution below shares: ``bn``, ``dtype``, ``weight_init``, ``conv_impl``."""
    return ConvSettings(
      bn=tuple(self.bn), dtype=self.dtype, weight_init=self.weight_init, conv_impl=self.conv_impl
    )

  @nn.compact
  def __call__(self, images: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    smallest = self.smallest_input
    if min(images.shape[1:3]) < smallest:
      raise SdpalError(
        f"input of {images.shape[1]}x{images.shape[2]} pixels is too small for output stride "
        f"{self.output_stride}: both sides must be at least {smallest} pixels."
      )
    conv = self.conv_settings
    backbone = ResNet(
      self.backbone_depth,
      self.deep_stem,
      self.stem_channels,
      self.base_channels,
      self.output_stride,
      self.contract_dilation,
      name="backbone",
      conv=conv,
    )
    output_size = self.output_size or images.shape[1:3]
    x = images.astype(self.dtype)
    if self.noise_residual == "srm":
      residuals = ops.srm_noise_residuals(images.astype(jnp.float32))
      residuals = BatchNorm(dtype=self.dtype, **dict(self.bn), name="noise_residual_norm")(
        residuals, train
      )
      x = jnp.concatenate([x, residuals], axis=-1)
    f = MOPC(backbone, self.feature_channels, name="mopc", conv=conv)(x, train)
    f = MOAP(
      self.feature_channels,
      self.walk_method,
      self.walk_steps,
      self.walk_restart,
      self.walk_threshold,
      self.walk_options,
      name="moap",
      conv=conv,
    )(f, train)
    f = DPAL(self.attention_heads, name="dpal", conv=conv)(f, train)
    return Decoder(self.decoder_channels, name="decoder", conv=conv)(f, tuple(output_size), train)


def build_model(config: ml_collections.ConfigDict) -> SDPAL:
  """SDPAL from a model config (``sdpal_jax.model_config.default_model_config``)."""
  validate_model_config(config)
  walk_options = {}
  if config.walk.method == "blocked":
    walk_options = {
      "block_size": int(config.walk.block_size),
      "similarity_cache_mib": float(
        config.walk.get("similarity_cache_mib", DEFAULT_SIMILARITY_CACHE_MIB)
      ),
    }
  elif config.walk.method == "sampled":
    walk_options = {
      "num_landmarks": int(config.walk.num_landmarks),
      "row_normalization": str(config.walk.row_normalization),
      "block_size": int(config.walk.block_size),
    }
  return SDPAL(
    backbone_depth=int(config.backbone_depth),
    deep_stem=bool(config.deep_stem),
    stem_channels=int(config.stem_channels),
    base_channels=int(config.base_channels),
    output_stride=int(config.output_stride),
    contract_dilation=bool(config.contract_dilation),
    feature_channels=int(config.feature_channels),
    walk_method=config.walk.method,
    walk_steps=int(config.walk.steps),
    walk_restart=float(config.walk.restart),
    walk_threshold=float(config.walk.threshold),
    walk_options=tuple(sorted(walk_options.items())),
    attention_heads=int(config.attention_heads),
    decoder_channels=tuple(int(c) for c in config.decoder_channels),
    output_size=None if config.output_size is None else tuple(int(s) for s in config.output_size),
    noise_residual=str(config.get("noise_residual", "none")),
    dtype=jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32,
    weight_init=str(config.get("init", "flax")),
    conv_impl=str(config.get("conv_impl", DEFAULT_CONV_IMPL)),
    bn=(
      ("momentum", float(config.bn_momentum)),
      ("epsilon", float(config.bn_epsilon)),
    ),
  )


def init_model(model: SDPAL, rng: jax.Array, image_shape=(1, 64, 64, 3)) -> dict:
  """``{"params", "batch_stats"}`` for ``model`` on images of ``image_shape``."""
  params_key, walk_key = jax.random.split(rng)

  @jax.jit
  def init(key_params, key_walk):
    return model.init(
      {"params": key_params, "walk": key_walk}, jnp.zeros(image_shape, jnp.float32), train=False
    )

  variables = init(params_key, walk_key)
  return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
