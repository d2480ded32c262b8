"""Small building blocks shared by the backbone and the SDPAL head (NHWC).

Initialisation (``weight_init``, the model config's ``init``): ``"flax"`` keeps flax's defaults (LeCun-normal
kernels, zero biases); ``"pytorch"`` draws what an untouched ``torch.nn.Conv2d``
/ ``nn.Linear`` holds after construction (``kaiming_uniform_(a=sqrt(5))``, i.e.
kernels and biases uniform in +-1/sqrt(fan_in), fan_in = in_channels x kernel
area). BatchNorm starts at scale 1, bias 0, mean 0, var 1 under both, as torch.

Convolutions (``conv_impl``, the model config's ``conv_impl``): ``"xla"`` is
``flax.linen.Conv`` as is (``lax.conv_general_dilated`` and jax's gradients);
``"matmul_grads"`` passes ``sdpal_jax.ops.conv_general_dilated`` to the same
``nn.Conv`` (1x1 convolutions as matrix products, matrix-product kernel
gradients for wide kernels: much faster training on XLA:CPU); ``"auto"`` is
``"matmul_grads"`` on the CPU backend and ``"xla"`` elsewhere. The parameters
(names, shapes, values) are the same under all three.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sdpal_jax.ops import convolution

INITS = ("flax", "pytorch")

# variance 1/(3 fan_in), uniform: limit sqrt(3 variance) = 1/sqrt(fan_in), torch's bound.
torch_kernel_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def torch_bias_init(fan_in: int):
  """torch's default bias initialiser: uniform in +-1/sqrt(fan_in) (0 when fan_in is 0)."""
  bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def conv_initializers(weight_init: str, fan_in: int) -> dict[str, Any]:
  """``kernel_init``/``bias_init`` keyword arguments of ``nn.Conv`` for ``weight_init``."""
  if weight_init == "flax":
    return {}
  if weight_init == "pytorch":
    if fan_in <= 0:
      raise ValueError("weight_init='pytorch' needs the layer's fan_in.")
    return {"kernel_init": torch_kernel_init, "bias_init": torch_bias_init(fan_in)}
  raise ValueError(f"weight_init={weight_init!r}; expected one of {INITS}.")


def conv_kwargs(conv_impl: str) -> dict[str, Any]:
  """The ``conv_general_dilated`` keyword argument of ``nn.Conv`` for ``conv_impl`` (none for xla)."""
  if conv_impl == "xla":
    return {}
  return {"conv_general_dilated": convolution.conv_general_dilated(conv_impl)}


def torch_padding(kernel_size: int, dilation: int = 1) -> tuple[tuple[int, int], tuple[int, int]]:
  """Symmetric padding ``dilation * (k - 1) / 2`` per side, as PyTorch's conv layers."""
  p = dilation * (kernel_size - 1) // 2
  return ((p, p), (p, p))


class _Norm(nn.Module):
  """The BatchNorm arithmetic of ``torch.nn.BatchNorm2d`` (variables named as flax's BatchNorm).

  Training mode normalises with the batch mean and the biased batch variance
  (two-pass, in float32) and moves the running variance towards the
  *unbiased* batch variance (x n/(n-1), n = values per channel), as torch
  does; flax's ``nn.BatchNorm`` uses the biased one there, which differs by
  up to 2x on the decoder's smallest maps. ``momentum`` is flax's (0.9 =
  torch's 0.1).
  """

  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, use_running_average: bool) -> jnp.ndarray:
    features = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
    ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
    x32 = x.astype(jnp.float32)
    if use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      axes = tuple(range(x.ndim - 1))
      # Under jit a batch sharded over devices is one global array: these means
      # are over the whole global batch, with no cross-device axis to name.
      count = math.prod(x.shape[:-1])
      mean = jnp.mean(x32, axes)
      var = jnp.mean(jnp.square(x32 - mean), axes)
      if not self.is_initializing():
        unbiased = var * (count / max(count - 1, 1))
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * unbiased
    y = (x32 - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias
    return y.astype(self.dtype)


class BatchNorm(nn.Module):
  """BatchNorm with the project's conventions (batch statistics in training, running in eval)."""

  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    return _Norm(
      momentum=self.momentum,
      epsilon=self.epsilon,
      dtype=self.dtype,
      name="bn",
    )(x, use_running_average=not train)


class ConvBN(nn.Module):
  """Conv (PyTorch padding) -> BatchNorm -> optional ReLU."""

  features: int
  kernel_size: int = 3
  strides: int = 1
  dilation: int = 1
  use_bias: bool = False
  relu: bool = True
  bn: dict | None = None
  dtype: Any = jnp.float32
  weight_init: str = "flax"
  conv_impl: str = convolution.DEFAULT_CONV_IMPL

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = nn.Conv(
      self.features,
      (self.kernel_size, self.kernel_size),
      strides=(self.strides, self.strides),
      padding=torch_padding(self.kernel_size, self.dilation),
      kernel_dilation=(self.dilation, self.dilation),
      use_bias=self.use_bias,
      dtype=self.dtype,
      name="conv",
      **conv_initializers(self.weight_init, x.shape[-1] * self.kernel_size**2),
      **conv_kwargs(self.conv_impl),
    )(x)
    x = BatchNorm(dtype=self.dtype, **(self.bn or {}), name="norm")(x, train)
    return nn.relu(x) if self.relu else x


def conv1x1(
  features: int,
  *,
  use_bias: bool,
  dtype: Any,
  name: str,
  weight_init: str = "flax",
  fan_in: int = 0,
  conv_impl: str = convolution.DEFAULT_CONV_IMPL,
) -> nn.Conv:
  """A pointwise convolution (``fan_in``: its input channels, for ``weight_init="pytorch"``)."""
  return nn.Conv(
    features,
    (1, 1),
    use_bias=use_bias,
    dtype=dtype,
    name=name,
    **conv_initializers(weight_init, fan_in),
    **conv_kwargs(conv_impl),
  )


@dataclasses.dataclass(frozen=True)
class ConvSettings:
  """What every convolution of a network shares, set once (``SDPAL`` builds it from its fields).

  ``bn``: BatchNorm keyword arguments as ``((name, value), ...)`` (hashable, as
  flax attributes should be); ``dtype``: compute dtype; ``weight_init``,
  ``conv_impl``: as ``ConvBN``'s (module docstring).
  """

  bn: tuple[tuple[str, float], ...] = ()
  dtype: Any = jnp.float32
  weight_init: str = "flax"
  conv_impl: str = convolution.DEFAULT_CONV_IMPL

  def conv_bn(
    self,
    features: int,
    kernel_size: int = 3,
    strides: int = 1,
    dilation: int = 1,
    *,
    name: str,
    relu: bool = True,
    use_bias: bool = False,
  ) -> ConvBN:
    """A ``ConvBN`` with these settings."""
    return ConvBN(
      features,
      kernel_size,
      strides,
      dilation,
      use_bias=use_bias,
      relu=relu,
      bn=dict(self.bn),
      dtype=self.dtype,
      weight_init=self.weight_init,
      conv_impl=self.conv_impl,
      name=name,
    )

  def conv1x1(self, features: int, *, use_bias: bool, fan_in: int, name: str) -> nn.Conv:
    """A pointwise ``nn.Conv`` with these settings (``fan_in``: its input channels)."""
    return conv1x1(
      features,
      use_bias=use_bias,
      dtype=self.dtype,
      name=name,
      weight_init=self.weight_init,
      fan_in=fan_in,
      conv_impl=self.conv_impl,
    )
