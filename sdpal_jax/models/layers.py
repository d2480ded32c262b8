"""Small building blocks shared by the backbone and the SDPAL head (NHWC)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


def torch_padding(kernel_size: int, dilation: int = 1) -> tuple[tuple[int, int], tuple[int, int]]:
  """Symmetric padding ``dilation * (k - 1) / 2`` per side, as PyTorch's conv layers."""
  p = dilation * (kernel_size - 1) // 2
  return ((p, p), (p, p))


class BatchNorm(nn.Module):
  """BatchNorm with the project's conventions (train/eval, optional cross-device axis)."""

  momentum: float = 0.9
  epsilon: float = 1e-5
  axis_name: str | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    return nn.BatchNorm(
      use_running_average=not train,
      momentum=self.momentum,
      epsilon=self.epsilon,
      axis_name=self.axis_name if train else None,
      dtype=self.dtype,
      name="bn",
    )(x)


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
    )(x)
    x = BatchNorm(dtype=self.dtype, **(self.bn or {}), name="norm")(x, train)
    return nn.relu(x) if self.relu else x


def conv1x1(features: int, *, use_bias: bool, dtype: Any, name: str) -> nn.Conv:
  """A pointwise convolution."""
  return nn.Conv(features, (1, 1), use_bias=use_bias, dtype=dtype, name=name)
