"""ResNet backbones with the deep ("v1c") stem and dilated output strides.

He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016); the
deep stem is the "ResNet-C" tweak of He et al., "Bag of Tricks for Image
Classification with Convolutional Neural Networks" (CVPR 2019), as mmcls
``resnet*_v1c``; dilation with "contract dilation" follows the SDPAL release's
backbone (the first block of a dilated stage uses half the dilation).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from sdpal_jax.models.layers import ConvSettings

# depth -> (block kind, blocks per stage)
STAGES = {
  18: ("basic", (2, 2, 2, 2)),
  34: ("basic", (3, 4, 6, 3)),
  50: ("bottleneck", (3, 4, 6, 3)),
  101: ("bottleneck", (3, 4, 23, 3)),
  152: ("bottleneck", (3, 8, 36, 3)),
}
# output stride -> (stage strides, stage dilations)
STRIDES_AND_DILATIONS = {
  8: ((1, 2, 1, 1), (1, 1, 2, 4)),
  16: ((1, 2, 2, 1), (1, 1, 1, 2)),
  32: ((1, 2, 2, 2), (1, 1, 1, 1)),
}


class BasicBlock(nn.Module):
  """Two 3x3 convs; the second is never dilated (as the release)."""

  planes: int
  strides: int = 1
  dilation: int = 1
  downsample: bool = False
  conv: ConvSettings = ConvSettings()
  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool):
    conv = self.conv
    y = conv.conv_bn(self.planes, 3, self.strides, self.dilation, name="conv1")(x, train)
    y = conv.conv_bn(self.planes, 3, 1, 1, relu=False, name="conv2")(y, train)
    if self.downsample:
      x = conv.conv_bn(self.planes, 1, self.strides, relu=False, name="downsample")(x, train)
    return nn.relu(y + x)


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (stride, dilation) -> 1x1 (x4) with a projection shortcut when needed."""

  planes: int
  strides: int = 1
  dilation: int = 1
  downsample: bool = False
  conv: ConvSettings = ConvSettings()
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool):
    conv = self.conv
    y = conv.conv_bn(self.planes, 1, name="conv1")(x, train)
    y = conv.conv_bn(self.planes, 3, self.strides, self.dilation, name="conv2")(y, train)
    y = conv.conv_bn(self.planes * 4, 1, relu=False, name="conv3")(y, train)
    if self.downsample:
      x = conv.conv_bn(self.planes * 4, 1, self.strides, relu=False, name="downsample")(x, train)
    return nn.relu(y + x)


class ResNet(nn.Module):
  """Returns the four stage outputs ``[B, H/s_i, W/s_i, C_i]`` of a ResNet.

  With output_stride 8 all of layer2..layer4 are at 1/8 of the input.
  """

  depth: int = 101
  deep_stem: bool = True
  stem_channels: int = 64
  base_channels: int = 64
  output_stride: int = 8
  contract_dilation: bool = True
  conv: ConvSettings = ConvSettings()

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> tuple[jnp.ndarray, ...]:
    conv = self.conv
    if self.deep_stem:
      half = self.stem_channels // 2
      x = conv.conv_bn(half, 3, 2, name="stem_0")(x, train)
      x = conv.conv_bn(half, 3, 1, name="stem_1")(x, train)
      x = conv.conv_bn(self.stem_channels, 3, 1, name="stem_2")(x, train)
    else:
      x = conv.conv_bn(self.stem_channels, 7, 2, name="stem")(x, train)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

    kind, blocks = STAGES[self.depth]
    block_cls = BasicBlock if kind == "basic" else Bottleneck
    strides, dilations = STRIDES_AND_DILATIONS[self.output_stride]
    in_channels = self.stem_channels
    outputs = []
    for stage, (num_blocks, stride, dilation) in enumerate(
      zip(blocks, strides, dilations, strict=True)
    ):
      planes = self.base_channels * 2**stage
      out_channels = planes * block_cls.expansion
      for index in range(num_blocks):
        first = index == 0
        block_dilation = dilation
        if first and self.contract_dilation and dilation > 1:
          block_dilation = dilation // 2
        x = block_cls(
          planes,
          strides=stride if first else 1,
          dilation=block_dilation,
          downsample=first and (stride != 1 or in_channels != out_channels),
          conv=conv,
          name=f"layer{stage + 1}_{index}",
        )(x, train)
        in_channels = out_channels
      outputs.append(x)
    return tuple(outputs)
