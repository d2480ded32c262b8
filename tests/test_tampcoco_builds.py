"""TampCOCO's bcm / bcmc subsets build from generated trees (CAT-Net list file or folder pair),
each photo in the split its file name's SHA-1 puts it in; the hash split itself."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
from dataset_fixtures import build_from_manual_dir as _build
from PIL import Image

import sdpal_jax.datasets  # noqa: F401 (registers the builders)
from sdpal_jax.datasets import common

SIZE = (24, 32)
TAMPCOCO_FRACTIONS = {"train": 0.9, "validation": 0.05, "test": 0.05}


def expected_split(name: str, fractions: dict[str, float]) -> str:
  """The documented rule by hand: the first 8 hex digits of SHA-1(file name) as a fraction of
  2^32, placed on the cumulative fractions in their order."""
  value = int(hashlib.sha1(os.path.basename(name).encode()).hexdigest()[:8], 16) / 2**32
  edge = 0.0
  for split, fraction in fractions.items():
    edge += fraction
    if value < edge:
      return split
  return list(fractions)[-1]


def _photo(path, seed):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  rng = np.random.default_rng(seed)
  Image.fromarray(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)).save(path, quality=90)


def _mask(path, rows):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  mask = np.zeros(SIZE, np.uint8)
  mask[rows] = 255  # white = tampered
  Image.fromarray(mask).save(path)


def _rows(i):
  return slice(i % 10, i % 10 + 3)


def _check(splits, names, folder):
  """Every name built once, in its hash split, with its mask's rows tampered."""
  seen = {}
  for split, examples in splits.items():
    for example in examples:
      file_name = example["file_name"].decode()
      seen[file_name] = split
      i = int(os.path.splitext(os.path.basename(file_name))[0])
      expected = np.zeros(SIZE, np.uint8)
      expected[_rows(i)] = 1
      np.testing.assert_array_equal(example["mask"][..., 0], expected, err_msg=file_name)
      assert example["tampered"] == 1 and example["image"].shape == (*SIZE, 3)
  assert seen == {os.path.join(folder, n): expected_split(n, TAMPCOCO_FRACTIONS) for n in names}


def test_bcm_reads_its_catnet_list_and_nothing_else(tmp_path):
  root = tmp_path / "manual"
  names = [f"{i}.jpg" for i in range(20)]
  for i, name in enumerate(names):
    _photo(root / "bcm_images" / name, i)
    _mask(root / "bcm_masks" / f"{i}.png", _rows(i))
  _photo(root / "bcm_images" / "99.jpg", 99)  # in the folder, not in the list: left out
  _mask(root / "bcm_masks" / "99.png", _rows(99))
  lines = [f"bcm_images/{i}.jpg,bcm_masks/{i}.png" for i in range(20)]
  lines.append("bcm_images/404.jpg,bcm_masks/404.png")  # listed, not there: skipped by name
  (root / "bcm_COCO_list.txt").write_text("\n".join(lines) + "\n")
  builder, splits = _build("tampcoco/bcm", root, tmp_path / "data")
  # 20 names: 18 train, 7.jpg test, 19.jpg validation (see the pinned values below).
  assert {k: len(v) for k, v in splits.items()} == {"train": 18, "validation": 1, "test": 1}
  _check(splits, names, "bcm_images")
  assert [os.path.basename(p) for p, _ in builder.skipped] == ["404.jpg"]


def test_bcmc_pairs_its_image_and_mask_folders_by_stem(tmp_path):
  root = tmp_path / "manual"
  names = [f"{i}.jpg" for i in range(20)]
  for i, name in enumerate(names):
    _photo(root / "bcmc_images" / name, 100 + i)
    _mask(root / "bcmc_masks" / f"{i}.png", _rows(i))
  _photo(root / "bcmc_images" / "55.jpg", 55)  # no mask: skipped by name
  _photo(root / "bcm_images" / "0.jpg", 0)  # another subset's folder: not read
  _mask(root / "bcm_masks" / "0.png", _rows(0))
  builder, splits = _build("tampcoco/bcmc", root, tmp_path / "data")
  _check(splits, names, "bcmc_images")
  skipped = {os.path.basename(p): reason for p, reason in builder.skipped}
  assert list(skipped) == ["55.jpg"] and "mask" in skipped["55.jpg"]


def test_hash_split_pinned_values_are_stable_across_versions_and_machines():
  # SHA-1("7.jpg") starts fc9956ee: 0.98671 of 2^32; "19.jpg" gives 0.91472, "0.jpg" 0.84879.
  assert hashlib.sha1(b"7.jpg").hexdigest()[:8] == "fc9956ee"
  assert common.hash_split("7.jpg", TAMPCOCO_FRACTIONS) == "test"
  assert common.hash_split("19.jpg", TAMPCOCO_FRACTIONS) == "validation"
  assert common.hash_split("0.jpg", TAMPCOCO_FRACTIONS) == "train"
  assert common.hash_split("0.jpg", {"train": 0.8, "test": 0.2}) == "test"  # 0.849 >= 0.8


def test_hash_split_follows_the_file_name_only_and_the_fractions():
  names = [f"photo_{i:05d}.jpg" for i in range(20_000)]
  assigned = [common.hash_split(f"/any/folder/{n}", TAMPCOCO_FRACTIONS) for n in names]
  assert assigned == [expected_split(n, TAMPCOCO_FRACTIONS) for n in names]
  assert assigned == [common.hash_split(f"other/{n}", TAMPCOCO_FRACTIONS) for n in names]
  counts = {s: assigned.count(s) / len(names) for s in TAMPCOCO_FRACTIONS}
  # Binomial standard errors: 0.0021 (90%) and 0.0015 (5%); 4 of them allowed.
  assert counts["train"] == pytest.approx(0.9, abs=0.009)
  assert counts["validation"] == pytest.approx(0.05, abs=0.006)
  assert counts["test"] == pytest.approx(0.05, abs=0.006)
  salted = [common.hash_split(n, TAMPCOCO_FRACTIONS, salt="x") for n in names]
  assert 0.05 < np.mean(np.asarray(salted) != np.asarray(assigned)) < 0.3
