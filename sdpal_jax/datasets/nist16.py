"""NIST Nimble 2016 (NC2016_Test0613), the manipulation task's reference.

Probes and masks are listed in
``reference/manipulation/NC2016-manipulation-ref.csv`` (``|``-separated, with
``ProbeFileName``, ``ProbeMaskFileName`` and ``IsTarget``). NIST masks are
drawn inverted: black (0) = manipulated, white = untouched (NIST MFC
evaluation plan). Probes with ``IsTarget == N`` are authentic. Splits:
``train`` / ``test`` by a hash of the file name (75% / 25%), since the 404 /
160 list of Zhou et al. (RGB-N, CVPR 2018) is not distributed with the data;
pass that list as a ``.lst`` source to reproduce it exactly.
"""

from __future__ import annotations

import csv
import os

from sdpal_jax.datasets import common
from sdpal_jax.errors import SdpalError


class Nist16(common.ForgeryBuilder):
  """NIST16 probes with inverted masks from the reference csv."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Unpack NC2016_Test0613 (from NIST, after registration) into manual_dir:
  manual_dir/probe/*.jpg
  manual_dir/mask/*.png
  manual_dir/reference/manipulation/NC2016-manipulation-ref.csv
"""
  HOMEPAGE = "https://www.nist.gov/itl/iad/mig/nimble-challenge-2017-evaluation"

  def _items(self, root):
    reference = os.path.join(root, "reference", "manipulation", "NC2016-manipulation-ref.csv")
    if not os.path.exists(reference):
      raise SdpalError(f"nist16: {reference} is missing.\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    splits = {"train": [], "test": []}
    with open(reference, newline="") as f:
      for row in csv.DictReader(f, delimiter="|"):
        image = os.path.join(root, row["ProbeFileName"])
        if row.get("IsTarget", "Y") == "Y":
          mask_name = row.get("ProbeMaskFileName") or ""
          mask = os.path.join(root, mask_name) if mask_name else None
          item = common.tampered_item(image, mask, "inverted")
        else:
          item = common.Item(image)
        splits[common.hash_split(image, {"train": 0.75, "test": 0.25})].append(item)
    return splits
