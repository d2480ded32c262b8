"""Where the train step's time goes on CPU: MOPC (backbone + align/fusion convs), ours vs the release.

Times the forward pass and forward+backward of a scalar loss for the
ResNet-101 v1c part of the network alone (the best of 2 runs after a
warm-up), so the convolution kernels of XLA:CPU and PyTorch can be compared
without the graph and attention parts:

  python tools/profile_backbone.py --impl torch --torch_reference /path/to/SDPAL
  python tools/profile_backbone.py --impl jax --dtype float32 [--output_stride 32]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def best_time(fn, repeats: int = 2) -> float:
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def profile_torch(images: np.ndarray, reference: str, threads: int) -> tuple[float, float]:
  import torch  # noqa: PLC0415

  torch.set_num_threads(threads)
  sys.path.insert(0, reference)
  import resnet as release_resnet  # noqa: PLC0415

  release_resnet.model_zoo.load_url = lambda *a, **k: {}  # no ImageNet download
  import sdpal as release  # noqa: PLC0415

  torch.manual_seed(0)
  part = release.FakeLocator(512, 1).mscc
  part.train()
  x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()

  def forward():
    with torch.no_grad():
      part(x)

  def forward_backward():
    part.zero_grad()
    part(x).float().pow(2).mean().backward()

  return best_time(forward), best_time(forward_backward)


def profile_jax(images: np.ndarray, dtype: str, output_stride: int) -> tuple[float, float]:
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  from sdpal_jax import model_config  # noqa: PLC0415
  from sdpal_jax.models import build_model  # noqa: PLC0415
  from sdpal_jax.models.resnet import ResNet  # noqa: PLC0415
  from sdpal_jax.models.sdpal import MOPC  # noqa: PLC0415

  c = model_config.release_model_config()
  c.output_stride = output_stride
  c.dtype = dtype
  net = build_model(c)  # the release's network; only its MOPC part is timed here
  kw = {"bn": dict(net.bn), "dtype": net.dtype}
  backbone = ResNet(
    net.backbone_depth,
    net.deep_stem,
    net.stem_channels,
    net.base_channels,
    net.output_stride,
    net.contract_dilation,
    **kw,
  )
  part = MOPC(backbone, net.feature_channels, **kw)
  x = jnp.asarray(images)
  variables = part.init(jax.random.key(0), x, train=False)

  def loss(params, stats, x):
    out, updates = part.apply(
      {"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
    )
    return jnp.mean(out.astype(jnp.float32) ** 2), updates

  grad = jax.jit(jax.value_and_grad(loss, has_aux=True))
  apply = jax.jit(lambda p, s, x: part.apply({"params": p, "batch_stats": s}, x, train=False))
  p, s = variables["params"], variables["batch_stats"]
  return (
    best_time(lambda: jax.block_until_ready(apply(p, s, x))),
    best_time(lambda: jax.block_until_ready(grad(p, s, x))),
  )


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--impl", choices=("jax", "torch"), required=True)
  p.add_argument("--size", type=int, default=256)
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--dtype", default="float32", help="jax only: float32 or bfloat16")
  p.add_argument("--output_stride", type=int, default=8, help="jax only: 8, 16 or 32")
  p.add_argument("--threads", type=int, default=2, help="torch only (jax: all cores)")
  p.add_argument("--torch_reference", default=None, help="local checkout of GCLion/SDPAL")
  args = p.parse_args(argv)
  images = np.random.default_rng(0).uniform(0, 255, (args.batch, args.size, args.size, 3))
  images = images.astype(np.float32)
  if args.impl == "torch":
    if not args.torch_reference:
      p.error("--impl torch needs --torch_reference")
    forward, both = profile_torch(images, args.torch_reference, args.threads)
    label = "release (torch)"
  else:
    forward, both = profile_jax(images, args.dtype, args.output_stride)
    label = f"jax {args.dtype}, output stride {args.output_stride}"
  print(
    f"{label}: MOPC at {args.size}, batch {args.batch}: forward {forward:.3f} s, "
    f"forward+backward {both:.3f} s, backward/forward {(both - forward) / forward:.1f}"
  )


if __name__ == "__main__":
  main()
