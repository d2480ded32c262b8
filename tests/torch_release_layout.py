"""A PyTorch network with the SDPAL release's module names (``FakeLocator``), for converter tests.

Written here from the release's public layout (``sdpal.py`` / ``resnet.py`` attribute names and
layer orders) and the paper's pipeline, so that its ``state_dict()`` keys and its forward pass
are an oracle independent of ``sdpal_jax.torch_import``'s own key functions:

  mscc.backbone_net   ResNet (``stem.{0,1,3,4,6,7}`` deep stem or ``conv1``/``bn1``; ``layerL.j``
                      blocks with ``convK``/``bnK`` and ``downsample.{0,1}``), output stride 8
  mscc.bottleneck1-3  3x3 conv-BN-ReLU on stages 2-4; ``mscc.bottleneck_fusion`` on their concat
  mscc.decoder        built by the release but never used in its forward pass
  fuse_conv           1x1 conv-BN-ReLU on concat(F, NPR(F), walk(concat(F, NPR(F))))
  diff_attn           to_q1, to_k1, to_q2, to_k2, to_v (1x1, no bias), unify; residual
  conv_refine.refine  (3x3 conv, BN, ReLU) x 2; residual
  unet                inc, down1-3 (``maxpool_conv.1.double_conv``), up1-3 (``conv.double_conv``),
                      outc.conv; the logits are resized (bilinear, align_corners) to the output size

Needs torch (import this module only where torch is installed).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# depth -> (bottleneck?, blocks per stage); stage strides and dilations at output stride 8.
DEPTHS = {18: (False, (2, 2, 2, 2)), 101: (True, (3, 4, 23, 3))}
STRIDES, DILATIONS = (1, 2, 1, 1), (1, 1, 2, 4)


def _conv_bn_relu(cin, cout, kernel, bias=False):
  return nn.Sequential(
    nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=bias), nn.BatchNorm2d(cout), nn.ReLU()
  )


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride, dilation, downsample):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, dilation, dilation, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return F.relu(out + (self.downsample(x) if self.downsample is not None else x))


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride, dilation, downsample):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, dilation, dilation, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.downsample = downsample

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = F.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return F.relu(out + (self.downsample(x) if self.downsample is not None else x))


class ResNet(nn.Module):
  """Four stage outputs; ``strides``/``dilations`` per stage (contract dilation: a dilated
  stage's first block uses half the dilation)."""

  def __init__(self, depth, deep_stem, stem=64, strides=STRIDES, dilations=DILATIONS):
    super().__init__()
    bottleneck, blocks = DEPTHS[depth]
    block = Bottleneck if bottleneck else BasicBlock
    self.deep_stem = deep_stem
    if deep_stem:
      self.stem = nn.Sequential(
        nn.Conv2d(3, stem // 2, 3, 2, 1, bias=False), nn.BatchNorm2d(stem // 2), nn.ReLU(),
        nn.Conv2d(stem // 2, stem // 2, 3, 1, 1, bias=False), nn.BatchNorm2d(stem // 2), nn.ReLU(),
        nn.Conv2d(stem // 2, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU(),
      )  # fmt: skip
    else:
      self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
      self.bn1 = nn.BatchNorm2d(stem)
    inplanes = stem
    for i, (count, stride, dilation) in enumerate(zip(blocks, strides, dilations, strict=True)):
      planes = 64 * 2**i
      layers = []
      for j in range(count):
        first = j == 0
        downsample = None
        if first and (stride != 1 or inplanes != planes * block.expansion):
          downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, 1, stride, bias=False),
            nn.BatchNorm2d(planes * block.expansion),
          )
        d = max(dilation // 2, 1) if first else dilation
        layers.append(block(inplanes, planes, stride if first else 1, d, downsample))
        inplanes = planes * block.expansion
      setattr(self, f"layer{i + 1}", nn.Sequential(*layers))

  def forward(self, x):
    x = self.stem(x) if self.deep_stem else F.relu(self.bn1(self.conv1(x)))
    x = F.max_pool2d(x, 3, 2, 1)
    outputs = []
    for i in range(4):
      x = getattr(self, f"layer{i + 1}")(x)
      outputs.append(x)
    return outputs


class MSCC(nn.Module):
  def __init__(self, depth, deep_stem, channels):
    super().__init__()
    self.backbone_net = ResNet(depth, deep_stem)
    widths = [128, 256, 512] if depth < 50 else [512, 1024, 2048]
    for i, width in enumerate(widths):
      setattr(self, f"bottleneck{i + 1}", _conv_bn_relu(width, channels, 3))
    self.bottleneck_fusion = _conv_bn_relu(3 * channels, channels, 3)
    self.decoder = nn.Sequential(  # the release builds it; its forward never calls it
      nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
      nn.Dropout2d(0.1), nn.Conv2d(channels, 1, 1),
    )  # fmt: skip

  def forward(self, x):
    _, x1, x2, x3 = self.backbone_net(x)
    parts = [self.bottleneck1(x1), self.bottleneck2(x2), self.bottleneck3(x3)]
    return self.bottleneck_fusion(torch.cat(parts, 1))


class DiffAttention(nn.Module):
  def __init__(self, channels, heads):
    super().__init__()
    self.heads = heads
    for name in ("to_q1", "to_k1", "to_q2", "to_k2", "to_v"):
      setattr(self, name, nn.Conv2d(channels, channels, 1, bias=False))
    self.unify = nn.Conv2d(channels, channels, 1)

  def forward(self, x):
    b, c, h, w = x.shape
    d = c // self.heads

    def heads(conv):
      return conv(x).reshape(b, self.heads, d, h * w)

    def attention(q, k):
      return torch.softmax(torch.einsum("bhdn,bhdm->bhnm", q, k) / d**0.5, dim=-1)

    diff = attention(heads(self.to_q1), heads(self.to_k1)) - attention(
      heads(self.to_q2), heads(self.to_k2)
    )
    out = torch.einsum("bhnm,bhdm->bhdn", diff, heads(self.to_v)).reshape(b, c, h, w)
    return self.unify(out) + x


class ConvRefine(nn.Module):
  def __init__(self, channels):
    super().__init__()
    self.refine = nn.Sequential(
      nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
      nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
    )  # fmt: skip

  def forward(self, x):
    return self.refine(x) + x


class DoubleConv(nn.Module):
  def __init__(self, cin, cout, mid=None):
    super().__init__()
    mid = mid or cout
    self.double_conv = nn.Sequential(
      nn.Conv2d(cin, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
      nn.Conv2d(mid, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
    )  # fmt: skip

  def forward(self, x):
    return self.double_conv(x)


class Down(nn.Module):
  def __init__(self, cin, cout):
    super().__init__()
    self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(cin, cout))

  def forward(self, x):
    return self.maxpool_conv(x)


class Up(nn.Module):
  def __init__(self, cin, cout):
    super().__init__()
    self.conv = DoubleConv(cin, cout, cin // 2)

  def forward(self, x, skip):
    x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
    dy, dx = skip.shape[2] - x.shape[2], skip.shape[3] - x.shape[3]
    x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
    return self.conv(torch.cat([skip, x], 1))


class OutConv(nn.Module):
  def __init__(self, cin):
    super().__init__()
    self.conv = nn.Conv2d(cin, 1, 1)

  def forward(self, x):
    return self.conv(x)


class UNet(nn.Module):
  def __init__(self, cin, channels):
    super().__init__()
    c0, c1, c2, c3 = channels
    self.inc = DoubleConv(cin, c0)
    self.down1, self.down2, self.down3 = Down(c0, c1), Down(c1, c2), Down(c2, c3)
    self.up1, self.up2, self.up3 = Up(c3 + c2, c1), Up(2 * c1, c0), Up(2 * c0, c0)
    self.outc = OutConv(c0)

  def forward(self, x):
    x1 = self.inc(x)
    x2 = self.down1(x1)
    x3 = self.down2(x2)
    x4 = self.down3(x3)
    return self.outc(self.up3(self.up2(self.up1(x4, x3), x2), x1))


def neighbour_pixel_residual(x):
  """x - up(down(x)), bilinear align_corners, down to floor(H/2) x floor(W/2)."""
  h, w = x.shape[2:]
  small = F.interpolate(
    x, size=(max(h // 2, 1), max(w // 2, 1)), mode="bilinear", align_corners=True
  )
  return x - F.interpolate(small, size=(h, w), mode="bilinear", align_corners=True)


def random_walk(nodes, steps=3, a=0.7, threshold=0.4):
  """W(k+1) = a W(k) A + (1 - a) I, G = W(K) X; A: thresholded cosine graph, no self-loops,
  rows normalised (+1e-8)."""
  b, c, h, w = nodes.shape
  x = nodes.reshape(b, c, h * w).transpose(1, 2)
  unit = F.normalize(x, dim=2)
  sim = unit @ unit.transpose(1, 2)
  sim = sim * (sim >= threshold) * (1 - torch.eye(h * w))
  affinity = sim / (sim.sum(2, keepdim=True) + 1e-8)
  walk = torch.eye(h * w).expand(b, -1, -1)
  for _ in range(steps):
    walk = a * walk @ affinity + (1 - a) * torch.eye(h * w)
  return (walk @ x).transpose(1, 2).reshape(b, c, h, w)


class ReleaseLayout(nn.Module):
  """The release's ``FakeLocator`` layout for a model config (depth 18 or 101, output stride 8)."""

  def __init__(self, model_config):
    super().__init__()
    c = int(model_config.feature_channels)
    self.mscc = MSCC(int(model_config.backbone_depth), bool(model_config.deep_stem), c)
    self.fuse_conv = _conv_bn_relu(4 * c, c, 1)
    self.diff_attn = DiffAttention(c, int(model_config.attention_heads))
    self.conv_refine = ConvRefine(c)
    self.unet = UNet(c, tuple(int(v) for v in model_config.decoder_channels))

  def forward(self, images, output_size):
    f = self.mscc(images)
    residual = neighbour_pixel_residual(f)
    walked = random_walk(torch.cat([f, residual], 1))
    x = self.fuse_conv(torch.cat([f, residual, walked], 1))
    x = self.conv_refine(self.diff_attn(x))
    logits = self.unet(x)
    return F.interpolate(logits, size=output_size, mode="bilinear", align_corners=True)[:, 0]


def randomised_state_dict(module: nn.Module, seed: int = 0) -> dict[str, np.ndarray]:
  """``module``'s state dict with every tensor redrawn (distinct values everywhere): weights
  keep torch's default scale, BatchNorm gets non-trivial affine parameters and statistics."""
  rng = np.random.default_rng(seed)
  state = {}
  with torch.no_grad():
    for key, value in module.state_dict().items():
      if key.endswith("num_batches_tracked"):
        state[key] = value.numpy()
        continue
      shape = tuple(value.shape)
      if key.endswith("running_var"):
        new = rng.uniform(0.5, 2.0, shape)
      elif key.endswith("running_mean") or key.endswith("bias"):
        new = rng.normal(0.0, 0.1, shape)
      elif value.ndim == 1:  # BatchNorm weight
        new = rng.uniform(0.5, 1.5, shape)
      else:  # conv weight: uniform in +-1/sqrt(fan_in), as torch's default init
        bound = 1.0 / np.sqrt(np.prod(shape[1:]))
        new = rng.uniform(-bound, bound, shape)
      state[key] = new.astype(np.float32)
  module.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
  return state
