r"""Split a built CASIA dataset so that every source photo lies on one side only.

CASIA's tampered names carry the two authentic photos they were made from
(``Sp_D_CND_A_pla0005_pla0023_0281``: source ``pla0005``, target ``pla0023``;
Dong et al., ChinaSIP 2013). Tampered images that share a photo are
connected; whole connected groups go to one side, so no photo (and no
object cut from it) is seen in training and in testing. Each side is
written as PNG photo/mask pairs with a ``.lst`` list that the streaming
pipeline (``--config.data.pipeline=stream --config.data.dataset=train.lst``)
and ``sdpal-evaluate --datasets test.lst`` read.

  python tools/source_disjoint_split.py --dataset casia_v1:test \
      --data_dir TFDS_DATA_DIR --out OUT [--test_fraction 0.3] [--seed 0]

The real archives are for research use: write OUT outside the repository.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

import numpy as np

_SOURCES = re.compile(r"_([a-z]{3}\d+)_([a-z]{3}\d+)[._]\d+", re.IGNORECASE)


def source_photos(file_name: str) -> tuple[str, ...]:
  """The authentic photo ids named in a CASIA tampered file name (lower case; () if none)."""
  match = _SOURCES.search(os.path.basename(file_name))
  return tuple(sorted({g.lower() for g in match.groups()})) if match else ()


def group_by_shared_photos(names: list[str]) -> list[int]:
  """A group index per name: names that share a source photo, directly or not, share a group."""
  parent = list(range(len(names)))

  def root(i: int) -> int:
    while parent[i] != i:
      parent[i] = parent[parent[i]]
      i = parent[i]
    return i

  first_with: dict[str, int] = {}
  for i, name in enumerate(names):
    for photo in source_photos(name):
      if photo in first_with:
        parent[root(i)] = root(first_with[photo])
      else:
        first_with[photo] = i
  roots = [root(i) for i in range(len(names))]
  order = {r: k for k, r in enumerate(dict.fromkeys(roots))}
  return [order[r] for r in roots]


def assign_sides(groups: list[int], test_fraction: float, seed: int) -> list[str]:
  """'train' or 'test' per item: whole groups, shuffled, until ~test_fraction of items is test."""
  sizes = np.bincount(groups)
  order = np.random.default_rng(seed).permutation(len(sizes))
  side_of_group, taken = {}, 0
  for g in order:
    is_test = taken < test_fraction * len(groups)
    side_of_group[int(g)] = "test" if is_test else "train"
    taken += int(sizes[g]) if is_test else 0
  return [side_of_group[g] for g in groups]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--dataset", default="casia_v1:test", help="tfds NAME:SPLIT of tampered images")
  p.add_argument("--data_dir", default=None, help="tfds data dir holding the built dataset")
  p.add_argument("--out", required=True)
  p.add_argument("--test_fraction", type=float, default=0.3)
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)

  import tensorflow_datasets as tfds  # noqa: PLC0415
  from PIL import Image  # noqa: PLC0415

  import sdpal_jax.datasets  # noqa: F401, PLC0415 (registers the builders)

  name, _, split = args.dataset.partition(":")
  builder = tfds.builder(name, data_dir=args.data_dir)
  examples = list(tfds.as_numpy(builder.as_dataset(split=split or "test", shuffle_files=False)))
  names = [e["file_name"].decode() for e in examples]
  unnamed = [n for n in names if not source_photos(n)]
  if unnamed:
    print(f"error: {len(unnamed)} names carry no source photos, e.g. {unnamed[0]}", file=sys.stderr)
    return 2
  sides = assign_sides(group_by_shared_photos(names), args.test_fraction, args.seed)
  for side in ("train", "test"):
    os.makedirs(os.path.join(args.out, side), exist_ok=True)
  lines = {"train": [], "test": []}
  for example, file_name, side in zip(examples, names, sides, strict=True):
    stem = os.path.splitext(os.path.basename(file_name))[0]
    photo = os.path.join(side, stem + ".png")
    mask = os.path.join(side, stem + "_gt.png")
    Image.fromarray(example["image"]).save(os.path.join(args.out, photo))
    Image.fromarray(example["mask"][..., 0] * 255).save(os.path.join(args.out, mask))
    lines[side].append(f"{photo},{mask}")
  for side, rows in lines.items():
    with open(os.path.join(args.out, f"{side}.lst"), "w") as f:
      f.write("\n".join(rows) + "\n")
  train_photos = {
    p for n, s in zip(names, sides, strict=True) if s == "train" for p in source_photos(n)
  }
  test_photos = {
    p for n, s in zip(names, sides, strict=True) if s == "test" for p in source_photos(n)
  }
  assert not train_photos & test_photos
  print(
    f"{args.dataset}: train {len(lines['train'])} images ({len(train_photos)} source photos), "
    f"test {len(lines['test'])} ({len(test_photos)}), no photo on both sides -> {args.out}"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
