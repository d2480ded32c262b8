"""NIST Nimble 2016 (NC2016_Test0613), the manipulation task's reference.

Probes and masks are listed in
``reference/manipulation/NC2016-manipulation-ref.csv`` (``|``-separated; the
columns used are ``ProbeFileName``, ``ProbeMaskFileName`` and ``IsTarget``).
Its paths are relative to the dataset's root: probes ``probe/NC2016_<n>.jpg``,
masks ``reference/manipulation/mask/NC2016_<m>.png`` -- a mask's number is not
its probe's, so only the csv pairs them (as in NIST's MediScore reference files,
github.com/usnistgov/MediScore ``data/test_suite``). The reference has 1,124
probes: 564 with ``IsTarget == Y`` and a mask (288 splices, 208 removals, 68
copy-clones: the "NIST16" of the field, e.g. MVSS-Net's ``data/NIST16.txt``)
and 560 with ``N`` (no manipulation: kept as authentic). NIST masks are drawn
inverted: black (0) = manipulated, white = untouched (NIST MFC evaluation
plan). Masks of another size than their probe: see
:func:`common.screen_mask_sizes`. Splits: ``train`` / ``test`` by a hash of
the file name (75% / 25%), since the 404 / 160 list of Zhou et al. (RGB-N,
CVPR 2018) is not distributed with the data; pass that list as a ``.lst``
source to reproduce it exactly.
"""

from __future__ import annotations

import csv
import os

import tensorflow_datasets as tfds

from sdpal_jax.datasets import common
from sdpal_jax.errors import SdpalError

_REFERENCE = os.path.join("reference", "manipulation", "NC2016-manipulation-ref.csv")


class Nist16(common.ForgeryBuilder):
  """NIST16 probes with inverted masks from the reference csv."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Unpack NC2016_Test0613 (from NIST, after registration) into manual_dir (or put the unpacked
NC2016_Test0613/ folder in it); the reference csv names every file relative to that folder:
  manual_dir/probe/NC2016_*.jpg
  manual_dir/reference/manipulation/mask/NC2016_*.png
  manual_dir/reference/manipulation/NC2016-manipulation-ref.csv
"""
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
    "1.0.0": "First release.",
    "1.1.0": "NC2016_Test0613/ may sit inside manual_dir; masks of another size resized or "
    "skipped by rule, logged.",
  }
  HOMEPAGE = "https://www.nist.gov/itl/iad/mig/nimble-challenge-2017-evaluation"

  def _items(self, root):
    candidates = [root] + [
      os.path.join(root, d)
      for d in sorted(os.listdir(root))
      if os.path.isdir(os.path.join(root, d))
    ]
    base = next((c for c in candidates if os.path.exists(os.path.join(c, _REFERENCE))), None)
    if base is None:
      raise SdpalError(
        f"nist16: {os.path.join(root, _REFERENCE)} is missing.\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
      )
    splits = {"train": [], "test": []}
    with open(os.path.join(base, _REFERENCE), newline="") as f:
      for row in csv.DictReader(f, delimiter="|"):
        image = os.path.join(base, row["ProbeFileName"])
        if (row.get("IsTarget") or "Y").strip().upper() == "Y":
          mask_name = (row.get("ProbeMaskFileName") or "").strip()
          mask = os.path.join(base, mask_name) if mask_name else None
          item = common.tampered_item(image, mask, "inverted")
        else:
          item = common.Item(image)
        splits[common.hash_split(image, {"train": 0.75, "test": 0.25})].append(item)
    return {split: common.screen_mask_sizes(self.name, items) for split, items in splits.items()}
