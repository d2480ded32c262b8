"""Realistic Tampering dataset (Korus & Huang, "Multi-scale analysis strategies in PRNU-based
tampering localization", IEEE TIFS 2017; pkorus.pl/downloads/dataset-realistic-tampering).

220 realistic forgeries from four cameras: ``<camera>/tampered-realistic/*.TIF``,
their ground truth ``<camera>/ground-truth/<stem>.PNG`` and the originals
``<camera>/pristine/*.TIF``. The ground-truth maps use grey levels for
different kinds of change; every bright pixel (> 127 in any channel) counts as
tampered. Split: ``test`` (tampered + pristine).
"""

from __future__ import annotations

import os

from sdpal_jax.datasets import common


class RealisticTampering(common.ForgeryBuilder):
  """Korus: per-camera tampered-realistic / ground-truth / pristine folders."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Unpack the Realistic Tampering dataset (pkorus.pl/downloads/dataset-realistic-tampering):
  manual_dir/<camera>/tampered-realistic/*.TIF
  manual_dir/<camera>/ground-truth/*.PNG
  manual_dir/<camera>/pristine/*.TIF
(or the data-images/ root of the archive as manual_dir)
"""
  HOMEPAGE = "http://pkorus.pl/downloads/dataset-realistic-tampering"

  def _items(self, root):
    items = []
    for directory, folders, _ in sorted(os.walk(root)):
      if "tampered-realistic" not in folders:
        continue
      truth = os.path.join(directory, "ground-truth")
      for path in common.list_images(os.path.join(directory, "tampered-realistic")):
        stem = os.path.splitext(os.path.basename(path))[0]
        items.append(common.tampered_item(path, common.find_mask(truth, [stem])))
      items += [common.Item(p) for p in common.list_images(os.path.join(directory, "pristine"))]
    return {"test": items}
