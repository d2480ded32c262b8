"""IMD2020 real-life manipulated images (Novozamsky, Mahdian & Saic, WACV-W 2020).

2,010 manipulated photos from the internet, each in a folder with its
original: ``<folder>/<id>_orig.<ext>`` (authentic), ``<id>_<k>.<ext>``
(manipulated) and ``<id>_<k>_mask.png`` (white = manipulated) — the layout of
the "IMD2020 real-life manipulated images" archive
(staff.utia.cas.cz/novozada/db). Splits ``train`` / ``validation`` / ``test``
(80 / 10 / 10 by a hash of the original's id, so a photo and its original never
straddle splits).
"""

from __future__ import annotations

import os
import re

from sdpal_jax.datasets import common


class Imd2020(common.ForgeryBuilder):
  """IMD2020: ``*_orig`` authentic, ``*_k`` manipulated with ``*_k_mask.png``."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Unpack "IMD2020 - real-life manipulated images" into manual_dir:
  manual_dir/<folder>/<id>_orig.jpg
  manual_dir/<folder>/<id>_0.jpg, manual_dir/<folder>/<id>_0_mask.png
"""
  HOMEPAGE = "http://staff.utia.cas.cz/novozada/db/"

  def _items(self, root):
    splits = {"train": [], "validation": [], "test": []}
    fractions = {"train": 0.8, "validation": 0.1, "test": 0.1}
    for directory, _, files in sorted(os.walk(root)):
      for name in sorted(files):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in common.IMAGE_EXTENSIONS or stem.endswith("_mask"):
          continue
        path = os.path.join(directory, name)
        photo_id = re.sub(r"_(orig|\d+)$", "", stem)
        split = common.hash_split(photo_id, fractions)
        if stem.endswith("_orig"):
          splits[split].append(common.Item(path))
        elif re.search(r"_\d+$", stem):
          mask = common.find_mask(directory, [stem + "_mask"])
          splits[split].append(common.tampered_item(path, mask))
    return splits
