"""Which way of running a checkpoint on photos larger than its training size keeps accuracy best.

For each image of a dataset, the checkpoint predicts the probability map in
four ways, and the release's dataset protocol (pixel F1 at 0.5 and pooled
AUC, ``sdpal_jax.metrics``) is computed for each:

* ``resize``: the photo resized to the training size and the map resized
  back (the release's way; loses pixel-level evidence).
* ``whole``: the photo at its own size in one piece, exact (blocked) walk.
* ``whole_sampled``: the same with the sampled (landmark) walk, the walk
  that keeps the graph affordable at 4096x4096 (``--num_landmarks``).
* ``tiles``: overlapping ``--tile_size`` tiles at native resolution,
  blended (``sdpal_jax.inference.Predictor`` with ``full_resolution``).

Usage:

  python tools/full_resolution_accuracy.py --checkpoint WORKDIR \\
      --dataset synthetic_forgery/mixed:test --tile_size 128 --tile_overlap 16 \\
      --num_landmarks 256 [--max_examples 100] [--out results.json]

Use a dataset whose photos are larger than the checkpoint's training size
(e.g. the quickstart checkpoint, trained at 128, on ``mixed`` at 256).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from sdpal_jax import metrics
from sdpal_jax.datasets.sources import open_source
from sdpal_jax.inference import Predictor

MODES = ("resize", "whole", "whole_sampled", "tiles")


def build_predictors(args) -> dict[str, Predictor]:
  big = 1 << 30  # a tile size no photo reaches: the whole photo in one piece
  return {
    "resize": Predictor.from_checkpoint(args.checkpoint),
    "whole": Predictor.from_checkpoint(
      args.checkpoint, full_resolution=True, tile_size=big, walk_method="blocked"
    ),
    "whole_sampled": Predictor.from_checkpoint(
      args.checkpoint,
      full_resolution=True,
      tile_size=big,
      walk_method="sampled",
      walk_num_landmarks=args.num_landmarks,
    ),
    "tiles": Predictor.from_checkpoint(
      args.checkpoint,
      full_resolution=True,
      tile_size=args.tile_size,
      tile_overlap=args.tile_overlap,
    ),
  }


def evaluate(args) -> dict[str, dict[str, float]]:
  predictors = build_predictors(args)
  accumulators = {mode: metrics.DatasetMetrics() for mode in MODES}
  seconds = dict.fromkeys(MODES, 0.0)
  count = 0
  for item in open_source(args.dataset):
    if args.max_examples and count >= args.max_examples:
      break
    image = np.asarray(item["image"])
    mask = np.asarray(item["mask"]).reshape(image.shape[:2])
    for mode, predictor in predictors.items():
      start = time.perf_counter()
      prob = predictor.predict_image(image)
      seconds[mode] += time.perf_counter() - start
      accumulators[mode].update(prob, mask)
    count += 1
  results = {}
  for mode, accumulator in accumulators.items():
    scores = accumulator.result()
    results[mode] = {
      "pixel_f1": scores["pixel_f1"],
      "pixel_auc": scores["pixel_auc"],
      "seconds_per_image": seconds[mode] / max(count, 1),
      "images": count,
    }
  return results


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--checkpoint", required=True)
  p.add_argument("--dataset", default="synthetic_forgery/mixed:test")
  p.add_argument("--tile_size", type=int, default=128)
  p.add_argument("--tile_overlap", type=int, default=16)
  p.add_argument("--num_landmarks", type=int, default=256)
  p.add_argument("--max_examples", type=int, default=0)
  p.add_argument("--out", default=None, help="write the results as JSON here")
  args = p.parse_args(argv)
  results = evaluate(args)
  lines = ["| mode | pixel F1 | pixel AUC | s/image |", "|---|---|---|---|"]
  for mode, r in results.items():
    lines.append(
      f"| {mode} | {r['pixel_f1']:.4f} | {r['pixel_auc']:.4f} | {r['seconds_per_image']:.3f} |"
    )
  print(f"{args.dataset}, {next(iter(results.values()))['images']} images")
  print("\n".join(lines))
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
  main()
