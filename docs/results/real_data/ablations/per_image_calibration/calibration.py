"""Per-image calibration, flipped-input averaging and two-model averaging on CASIA v1 test.

Not part of the library: the script behind this folder's results.txt.

  TFDS_DATA_DIR=DATA python calibration.py --checkpoint default --maps A.npz
  # results_packaged.txt: --checkpoint default when it was one network, the member
  #   sdpal_jax/default_model/members/bundled_photos since the ensemble (the same weights)
  TFDS_DATA_DIR=DATA python calibration.py --checkpoint W --maps B.npz --with_maps A.npz

Predicts every second image of casia_v1:test (460 of 920, the even indices in
tfds order; ``--half odd``: the other 460) at native resolution, plain and
flipped left-right, stores the maps (float16) in --maps (reused when present;
a comma-separated list of stored files is scored as one set), then prints pooled and
per-image pixel AUC and per-image F1 at 0.5 of each variant. Pooled AUC ranks
all pixels of all photos together; a per-image monotone transform leaves the
per-image AUC unchanged and can only move the pooled one.
"""

import argparse
import os

import numpy as np
import tensorflow_datasets as tfds

from sdpal_jax.inference import Predictor
from sdpal_jax.metrics import per_image_record, single_map_auc


def dump(checkpoint: str, step: int | None, path: str, half: str = "even") -> None:
  predictor = Predictor.from_checkpoint(checkpoint, step=step)
  arrays = {}
  for i, example in enumerate(tfds.as_numpy(tfds.load("casia_v1", split="test"))):
    if i % 2 != (half == "odd"):
      continue
    k, image = i // 2, example["image"]
    arrays[f"m{k}"] = predictor.predict_image(image).astype(np.float16)
    flipped = predictor.predict_image(np.ascontiguousarray(image[:, ::-1]))[:, ::-1]
    arrays[f"f{k}"] = flipped.astype(np.float16)
    arrays[f"g{k}"] = example["mask"][..., 0] > 0
  np.savez(path, **arrays)


def load(paths: str) -> tuple[list, list, list]:
  """(maps, flipped maps, masks) of every file in the comma-separated ``paths``, in order."""
  maps, flips, masks = [], [], []
  for path in paths.split(","):
    d = np.load(path)
    keys = sorted(int(key[1:]) for key in d.files if key.startswith("m"))
    maps += [d[f"m{i}"].astype(np.float32) for i in keys]
    flips += [d[f"f{i}"].astype(np.float32) for i in keys]
    masks += [d[f"g{i}"] for i in keys]
  return maps, flips, masks


def scores(maps: list, masks: list) -> str:
  pooled = single_map_auc(np.concatenate([m.ravel() for m in maps]),
                          np.concatenate([g.ravel() for g in masks]))  # fmt: skip
  records = [per_image_record(m, g) for m, g in zip(maps, masks, strict=True)]
  per_image = np.nanmean([r["pixel_auc"] for r in records])  # NaN: a mask of one class
  f1 = np.mean([r["pixel_f1"] for r in records])
  return f"pooled {100 * pooled:.2f}  per-image {100 * per_image:.2f}  F1@0.5 {100 * f1:.2f}"


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--checkpoint", default="default")
  parser.add_argument("--step", type=int, default=None)
  parser.add_argument("--maps", required=True)
  parser.add_argument("--half", choices=("even", "odd"), default="even", help="images to dump")
  parser.add_argument("--with_maps", default=None, help="a second model's --maps, averaged")
  args = parser.parse_args()
  if "," not in args.maps and not os.path.exists(args.maps):
    dump(args.checkpoint, args.step, args.maps, args.half)
  maps, flips, masks = load(args.maps)
  logits = [np.log(np.clip(p, 1e-6, 1 - 1e-6) / np.clip(1 - p, 1e-6, 1)) for p in maps]
  variants = {
    "as predicted": maps,
    "flip averaged (mean probability)": [(p + f) / 2 for p, f in zip(maps, flips, strict=True)],
    "logit minus its image's median": [x - np.median(x) for x in logits],
    "logit z-scored per image": [(x - x.mean()) / (x.std() + 1e-6) for x in logits],
    "probability / its image's maximum": [p / (p.max() + 1e-6) for p in maps],
    "probability x its image's maximum": [p * p.max() for p in maps],
  }
  if args.with_maps:
    other, other_flips, _ = load(args.with_maps)
    variants["mean with --with_maps"] = [(p + q) / 2 for p, q in zip(maps, other, strict=True)]
    variants["mean with --with_maps, both flip averaged"] = [
      (p + f + q + r) / 4 for p, f, q, r in zip(maps, flips, other, other_flips, strict=True)
    ]
  print(f"{len(maps)} images of casia_v1:test")
  for name, variant in variants.items():
    print(f"{name:42s} {scores(variant, masks)}", flush=True)


if __name__ == "__main__":
  main()
