r"""Local check: the release's PyTorch model and our converted checkpoint agree.

  python tools/check_release_parity.py --release_dir /path/to/SDPAL-checkout

Imports the release's ``sdpal.py`` from the user's own checkout at run time
(nothing of it is vendored), builds ``FakeLocator`` with random weights (its
ImageNet download is bypassed), runs a few train-mode passes so the BatchNorm
statistics are not trivial, saves the state dict, converts it with
``tools/convert_torch_checkpoint.py`` and compares the probabilities of both
models on a random 256x256 uint8 image.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np


def main() -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("--release_dir", required=True)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--train_passes", type=int, default=3)
  args = parser.parse_args()

  import torch  # noqa: PLC0415

  torch.manual_seed(args.seed)
  torch.set_num_threads(2)
  sys.path.insert(0, os.path.abspath(args.release_dir))
  import resnet as release_resnet  # noqa: PLC0415

  release_resnet.model_zoo.load_url = lambda *a, **k: {}  # no ImageNet download
  import sdpal as release  # noqa: PLC0415

  model = release.FakeLocator(512, 1)
  rng = np.random.default_rng(args.seed)
  model.train()
  with torch.no_grad():
    for _ in range(args.train_passes):
      model(torch.from_numpy(rng.uniform(0, 255, (2, 3, 256, 256)).astype(np.float32)))
  model.eval()
  image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
  with torch.no_grad():
    logits = model(torch.from_numpy(image).permute(2, 0, 1)[None].float())
  torch_prob = torch.sigmoid(logits)[0].numpy()

  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from convert_torch_checkpoint import convert_release  # noqa: PLC0415

  from sdpal_jax.inference import Predictor  # noqa: PLC0415

  with tempfile.TemporaryDirectory() as tmp:
    pth = os.path.join(tmp, "release.pth")
    torch.save(model.state_dict(), pth)
    out = convert_release(pth, os.path.join(tmp, "converted"))
    jax_prob = Predictor.from_checkpoint(out).predict_image(image)
  diff = np.abs(jax_prob - torch_prob)
  print(f"probabilities: max abs diff {diff.max():.3e}, mean abs diff {diff.mean():.3e}")
  print(f"torch prob range [{torch_prob.min():.4f}, {torch_prob.max():.4f}]")
  return 0 if diff.max() < 1e-4 else 1


if __name__ == "__main__":
  sys.exit(main())
