r"""Local checks against the PyTorch release: inference (default) and training (``--train``).

  python tools/check_release_parity.py --release_dir /path/to/SDPAL-checkout
  python tools/check_release_parity.py --release_dir /path/to/SDPAL-checkout --train

Imports the release's ``sdpal.py`` from the user's own checkout at run time
(nothing of it is vendored) and builds ``FakeLocator`` with random weights
(its ImageNet download is bypassed).

Inference: runs a few train-mode passes so the BatchNorm statistics are not
trivial, saves the state dict, converts it with ``sdpal_jax.convert`` and
compares the probabilities of both models on a random 256x256 uint8 image.

Training (``--train``): converts the release's random init (BatchNorm running
statistics included) with ``sdpal_jax.torch_import``, then takes K optimiser
steps on the same batch: the release's loop (``main.py`` L76-84:
``torch.sigmoid`` of the logits, then its ``BCEWithLogitsDiceLoss(1.0, 0.0)``
criterion, which is ``nn.BCELoss`` plus 0 x Dice, ``sdpal.py`` L431-453 and
``main.py`` L201; ``optim.Adam(lr=1e-4)``, ``main.py`` L202; BatchNorm in
train mode) and ours (``train_state.train_step`` with ``loss.form="release"``
and ``make_optimizer``'s Adam). Two runs by default: the paper network at
256x256 for 1 step and at 64x64 for 3 steps (the release's classes fix the
ResNet-101 backbone and the 512-channel head, so "small" is a smaller input;
its output stays 256x256), batch 2.

Why a float64 reference: at random init this 101-layer network with
train-mode BatchNorm amplifies float32 rounding enormously. The release's
own float32 step-1 gradients differ from the same code run in float64 by up
to 20-30% in some tensors (stem and early BatchNorm parameters), its loss by
1e-5 to 2e-4. Two float32 implementations that sum in different orders can
therefore only be compared through an exact reference: the release is run a
second time in float64 (same init, same batch) and each measure below is
taken for ours (float32) and for the release (float32) against it. The check
passes when ours is within ``RATIO`` times the release's own float32 error
(plus a small floor), i.e. our implementation is as faithful to the release's
arithmetic as the release's float32 run is to itself.

The measures (one number each, the worst over tensors unless said):
- ``loss_rel``: every step's loss, relative;
- ``grad_rel``/``grad_rel_median``: ||g - g_ref|| / ||g_ref|| per tensor of
  the step-1 gradient, read back from Adam's first moment (after one step
  m = (1 - b1) g on both sides). Conv biases in front of a train-mode
  BatchNorm (DPAL's ``refine`` convs) have an exactly zero gradient, so
  whatever either side computes is rounding noise: they are left out here
  and below, and ``pre_bn_bias_grad`` reports their largest |g| relative to
  a typical tensor's largest;
- ``update_rms_step1``/``_stepK``: parameter *updates* p_k - p_0 against the
  reference's, RMS over all weights in units of k x lr: Adam's first steps
  move every weight by about lr whatever the size of its gradient
  (m / sqrt(v) = sign(g) at step 1), so a raw parameter difference means
  nothing unless measured against lr; ``flipped_step1`` is the fraction of
  weights whose first update went the other way (a gradient whose sign is
  rounding noise: these differ by 2 lr);
- ``bn_mean_rel`` (relative to each tensor's RMS) and ``bn_var_rel``
  (relative) of the BatchNorm running statistics after K steps.
The last line prints ours/release-float32 for each measure and the direct
ours-vs-release-float32 loss and parameter differences.

Measured (seed 0, batch 2, CPU; ours / release float32, both against the
release in float64; about 3 minutes per run on 2 cores):
  256px, 1 step: loss 1.2e-5 / 1.5e-5, grad_rel 0.22 / 0.20 (median 0.16 /
    0.15), update RMS 0.43 / 0.42 lr, flipped 4.7% / 4.4% of the weights,
    BN mean 3.8e-3 / 2.3e-3, BN var 8.2e-5 / 6.3e-5; ours vs release float32
    directly: loss 2.3e-6, largest parameter difference 2.0e-4 (= 2 lr: a
    flipped weight).
  64px, 3 steps: loss 7.1e-3 / 2.9e-2, grad_rel 0.58 / 0.32 (median 0.48 /
    0.25), update RMS after 3 steps 0.54 / 0.55 lr, flipped 9.2% / 6.1%, BN
    mean 0.56 / 0.52, BN var 0.19 / 0.17. At 64px the decoder's deepest
    BatchNorms see 2 values per channel (1x1 maps, batch 2) and float32 alone
    moves the release's second loss by 3%: a stress test of the K-step loop,
    not a fine check. The fine checks of the same semantics (loss, Adam,
    BatchNorm in train mode, K steps) are the shallow networks of
    tests/test_release_training_parity.py, where float32 agrees to 1e-7.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Any

import numpy as np

LEARNING_RATE = 1e-4
ADAM_B1 = 0.9
# Ours (float32) passes when its error against the float64 release is at most RATIO x the
# release's own float32 error plus FLOORS (the floors matter only where both are ~exact).
RATIO = 4.0
FLOORS = {
  "loss_rel": 1e-6,
  "grad_rel": 1e-5,
  "grad_rel_median": 1e-5,
  "update_rms_step1": 1e-4,
  "update_rms_stepK": 1e-4,
  "flipped_step1": 1e-6,
  "bn_mean_rel": 1e-5,
  "bn_var_rel": 1e-5,
}


# --- the release, imported from the user's checkout ------------------------------------------


def import_release(release_dir: str):
  """The release's ``sdpal`` module (``resnet``'s ImageNet download replaced by nothing)."""
  release_dir = os.path.abspath(release_dir)
  if not os.path.isfile(os.path.join(release_dir, "sdpal.py")):
    raise FileNotFoundError(f"{release_dir} has no sdpal.py: not a GCLion/SDPAL checkout.")
  if release_dir not in sys.path:
    sys.path.insert(0, release_dir)
  import resnet as release_resnet  # noqa: PLC0415

  release_resnet.model_zoo.load_url = lambda *a, **k: {}  # no ImageNet download
  import sdpal as release  # noqa: PLC0415

  return release


def release_model(release_dir: str, seed: int):
  """``FakeLocator(512, 1)`` with the release's (torch default) random init."""
  import torch  # noqa: PLC0415

  release = import_release(release_dir)
  torch.manual_seed(seed)
  return release, release.FakeLocator(512, 1)


def _numpy_state(model) -> dict[str, np.ndarray]:
  return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


# --- inference parity (the original check) ---------------------------------------------------


def inference_parity(release_dir: str, seed: int, train_passes: int) -> int:
  import torch  # noqa: PLC0415

  from sdpal_jax.convert import convert_release  # noqa: PLC0415
  from sdpal_jax.inference import Predictor  # noqa: PLC0415

  _, model = release_model(release_dir, seed)
  rng = np.random.default_rng(seed)
  model.train()
  with torch.no_grad():
    for _ in range(train_passes):
      model(torch.from_numpy(rng.uniform(0, 255, (2, 3, 256, 256)).astype(np.float32)))
  model.eval()
  image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
  with torch.no_grad():
    logits = model(torch.from_numpy(image).permute(2, 0, 1)[None].float())
  torch_prob = torch.sigmoid(logits)[0].numpy()
  with tempfile.TemporaryDirectory() as tmp:
    pth = os.path.join(tmp, "release.pth")
    torch.save(model.state_dict(), pth)
    out = convert_release(pth, os.path.join(tmp, "converted"))
    jax_prob = Predictor.from_checkpoint(out).predict_image(image)
  diff = np.abs(jax_prob - torch_prob)
  print(f"torch prob range [{torch_prob.min():.4f}, {torch_prob.max():.4f}]")
  print(f"probabilities: max abs diff {diff.max():.3e}, mean abs diff {diff.mean():.3e}")
  return 0 if diff.max() < 1e-4 else 1


# --- training parity -------------------------------------------------------------------------


def make_batch(size: int, batch: int, seed: int, mask_size: int = 256) -> dict[str, np.ndarray]:
  """Raw 0..255 float images ``[B, size, size, 3]`` and rectangle masks ``[B, m, m]`` in {0, 1}."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (batch, size, size, 3)).astype(np.float32)
  masks = np.zeros((batch, mask_size, mask_size), np.float32)
  for mask in masks:
    y0, x0 = rng.integers(0, mask_size // 2, 2)
    h, w = rng.integers(mask_size // 8, mask_size // 2, 2)
    mask[y0 : y0 + h, x0 : x0 + w] = 1.0
  return {"image": images, "mask": masks}


def release_train(model, batch, steps: int, release, convert, dtype: str = "float32") -> dict:
  """K steps of the release's loop in ``dtype``; losses and (converted) gradients and states."""
  import torch  # noqa: PLC0415

  torch_dtype = getattr(torch, dtype)
  previous = torch.get_default_dtype()
  # The release makes its walk's identity matrices in the default dtype (sdpal.py L41-55).
  torch.set_default_dtype(torch_dtype)
  try:
    model = model.to(torch_dtype).train()
    images = torch.from_numpy(batch["image"]).permute(0, 3, 1, 2).contiguous().to(torch_dtype)
    masks = torch.from_numpy(batch["mask"]).to(torch_dtype)
    criterion = release.BCEWithLogitsDiceLoss(bce_weight=1.0, dice_weight=0.0)  # main.py L201
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)  # main.py L202
    out: dict[str, Any] = {"losses": []}
    for step in range(1, steps + 1):
      optimizer.zero_grad()
      probs = torch.sigmoid(model(images)).squeeze(1)  # main.py L77-78
      loss = criterion(probs, masks)
      loss.backward()
      optimizer.step()
      out["losses"].append(float(loss.item()))
      if step == 1:
        grads = _numpy_state(model)
        for name, param in model.named_parameters():
          if "exp_avg" in optimizer.state[param]:  # not mscc.decoder.*, unused by forward
            grads[name] = optimizer.state[param]["exp_avg"].numpy() / (1 - ADAM_B1)
        out["grads1"] = convert(grads)["params"]
        if steps > 1:
          out["state1"] = convert(_numpy_state(model))
    out["stateK"] = convert(_numpy_state(model))
    out.setdefault("state1", out["stateK"])
    return out
  finally:
    torch.set_default_dtype(previous)


def release_train_config(steps: int, model_config=None):
  import ml_collections  # noqa: PLC0415

  c = ml_collections.ConfigDict()
  c.model = model_config
  c.num_train_steps = steps
  c.optimizer = {
    "learning_rate": LEARNING_RATE,
    "schedule": "constant",
    "warmup_steps": 0,
    "weight_decay": 0.0,
    "grad_clip": 0.0,
  }
  c.loss = {"form": "release", "dice_weight": 0.0, "positive_weight": 1.0}
  return c


def jax_train(variables, batch, steps: int, model_config) -> dict[str, Any]:
  """K steps of ``train_state.train_step`` (loss.form "release", Adam lr 1e-4) from ``variables``."""
  import functools  # noqa: PLC0415

  import jax  # noqa: PLC0415
  import optax  # noqa: PLC0415

  from sdpal_jax import train_state  # noqa: PLC0415
  from sdpal_jax.models import build_model  # noqa: PLC0415

  config = release_train_config(steps, model_config)
  state = train_state.create_train_state(
    config, build_model(model_config), jax.random.key(0), variables=variables
  )
  step_fn = jax.jit(
    functools.partial(train_state.train_step, loss_fn=train_state.make_loss(config.loss))
  )
  batch = {k: jax.numpy.asarray(v) for k, v in batch.items()}
  out: dict[str, Any] = {"losses": []}
  for step in range(1, steps + 1):
    state, metrics = step_fn(state, batch, jax.random.key(1))
    out["losses"].append(float(metrics["loss"]))
    variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    if step == 1:
      mu = optax.tree_utils.tree_get(state.opt_state, "mu")
      out["grads1"] = jax.tree.map(lambda m: np.asarray(m) / (1 - ADAM_B1), mu)
      out["state1"] = variables
  out["stateK"] = variables
  return out


def _flat(tree) -> dict[str, np.ndarray]:
  from flax import traverse_util  # noqa: PLC0415

  return {
    "/".join(k): np.asarray(v, np.float64) for k, v in traverse_util.flatten_dict(tree).items()
  }


def _pre_bn_bias(name: str) -> bool:
  """A conv bias feeding a train-mode BatchNorm (ConvBN's ``conv/bias``): zero gradient."""
  return name.endswith("conv/bias")


def measure(initial: dict, run: dict, reference: dict, steps: int) -> dict[str, float]:
  """The differences of ``run`` from ``reference`` (see the module docstring)."""
  p0 = _flat(initial["params"])
  g, g_ref = _flat(run["grads1"]), _flat(reference["grads1"])
  rels = [
    np.linalg.norm(g[n] - g_ref[n]) / max(np.linalg.norm(g_ref[n]), 1e-30)
    for n in g_ref
    if not _pre_bn_bias(n)
  ]
  out = {
    "loss_rel": max(
      abs(a - b) / abs(b) for a, b in zip(run["losses"], reference["losses"], strict=True)
    ),
    "grad_rel": float(np.max(rels)),
    "grad_rel_median": float(np.median(rels)),
  }
  for label, key, k in (("step1", "state1", 1), ("stepK", "stateK", steps)):
    p, p_ref = _flat(run[key]["params"]), _flat(reference[key]["params"])
    names = [n for n in p_ref if not _pre_bn_bias(n)]
    errors = [((p[n] - p0[n]) - (p_ref[n] - p0[n])) / (k * LEARNING_RATE) for n in names]
    out[f"update_rms_{label}"] = float(
      np.sqrt(sum(np.sum(e**2) for e in errors) / sum(e.size for e in errors))
    )
    if k == 1:
      flipped = sum(int(np.sum(np.abs(e) > 1.0)) for e in errors)
      out["flipped_step1"] = flipped / sum(e.size for e in errors)
  s, s_ref = _flat(run["stateK"]["batch_stats"]), _flat(reference["stateK"]["batch_stats"])
  mean_rel = var_rel = 0.0
  for name, ref in s_ref.items():
    diff = np.abs(s[name] - ref)
    if name.endswith("/mean"):
      mean_rel = max(mean_rel, float(diff.max() / (np.sqrt(np.mean(ref**2)) + 1e-12)))
    else:
      var_rel = max(var_rel, float((diff / ref).max()))
  out["bn_mean_rel"], out["bn_var_rel"] = mean_rel, var_rel
  return out


def train_parity(
  release_dir: str, *, size: int, steps: int, batch_size: int = 2, seed: int = 0
) -> dict[str, Any]:
  """Trains the release (float32 and float64) and ours side by side; returns the measures.

  ``{"ours": measure(ours vs release-f64), "release32": measure(release-f32 vs release-f64),
  "losses": {...}, "direct": ours vs release-f32 loss and parameter differences, ...}``.
  """
  import copy  # noqa: PLC0415

  from sdpal_jax import model_config, torch_import  # noqa: PLC0415

  release, model = release_model(release_dir, seed)
  config = model_config.release_model_config()

  def convert(state_dict):
    return torch_import.convert_release_state_dict(state_dict, config, source="release")

  initial = convert(_numpy_state(model))
  batch = make_batch(size, batch_size, seed)
  reference = release_train(copy.deepcopy(model), batch, steps, release, convert, "float64")
  release32 = release_train(model, batch, steps, release, convert, "float32")
  del model
  ours = jax_train(initial, batch, steps, config)
  p32, pj = _flat(release32["stateK"]["params"]), _flat(ours["stateK"]["params"])
  direct_loss = max(
    abs(a - b) / abs(b) for a, b in zip(ours["losses"], release32["losses"], strict=True)
  )
  g_ref = _flat(reference["grads1"])
  typical = np.median([np.abs(v).max() for n, v in g_ref.items() if not _pre_bn_bias(n)])
  pre_bn = max(
    np.abs(v).max()
    for run in (ours, release32)
    for n, v in _flat(run["grads1"]).items()
    if _pre_bn_bias(n)
  )
  return {
    "size": size,
    "steps": steps,
    "batch": batch_size,
    "ours": measure(initial, ours, reference, steps),
    "release32": measure(initial, release32, reference, steps),
    "losses": {
      "release_f64": reference["losses"],
      "release_f32": release32["losses"],
      "ours": ours["losses"],
    },
    "direct_loss_rel": direct_loss,
    "direct_param_abs": max(float(np.abs(pj[n] - p32[n]).max()) for n in p32),
    "pre_bn_bias_grad": float(pre_bn / typical),
  }


def tolerance_violations(result: dict[str, Any]) -> list[str]:
  """The measures where ours exceeds RATIO x the release's float32 error + the floor."""
  ours, base = result["ours"], result["release32"]
  return [k for k, floor in FLOORS.items() if not ours[k] <= RATIO * base[k] + floor]


def summary(result: dict[str, Any]) -> str:
  """One line: ``measure=ours/release-f32`` for every measure, then the direct differences."""
  ours, base = result["ours"], result["release32"]
  parts = [f"{k}={ours[k]:.2e}/{base[k]:.2e}" for k in FLOORS]
  return (
    f"{result['size']}px K={result['steps']} B={result['batch']}: "
    + " ".join(parts)
    + f" | ours-vs-release_f32 loss_rel={result['direct_loss_rel']:.2e}"
    f" param_abs={result['direct_param_abs']:.2e} pre_bn_bias_grad={result['pre_bn_bias_grad']:.1e}"
  )


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--release_dir", required=True)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--train_passes", type=int, default=3, help="inference check only")
  parser.add_argument("--train", action="store_true", help="training-step parity")
  parser.add_argument(
    "--runs",
    default="256:1,64:3",
    help="--train: comma-separated SIZE:STEPS runs of the paper network (batch --batch)",
  )
  parser.add_argument("--batch", type=int, default=2)
  args = parser.parse_args()

  import torch  # noqa: PLC0415

  torch.set_num_threads(max(1, min(os.cpu_count() or 1, 16)))
  if not args.train:
    return inference_parity(args.release_dir, args.seed, args.train_passes)
  lines, failed = [], []
  for run in args.runs.split(","):
    size, steps = (int(v) for v in run.split(":"))
    result = train_parity(
      args.release_dir, size=size, steps=steps, batch_size=args.batch, seed=args.seed
    )
    for name, losses in result["losses"].items():
      print(f"{size}x{size} losses {name}: " + " ".join(f"{v:.7f}" for v in losses))
    lines.append(f"[{summary(result)}]")
    failed += [f"{size}px:{k}" for k in tolerance_violations(result)]
  print(f"tolerance: ours <= {RATIO:g} x release_f32 + floor, both measured against release_f64")
  print(("FAIL " + ",".join(failed) + " " if failed else "OK ") + " ".join(lines))
  return 1 if failed else 0


if __name__ == "__main__":
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
  sys.exit(main())
