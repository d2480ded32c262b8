"""COVERAGE copy-move forgery dataset (Wen et al., ICIP 2016).

100 forged / original pairs (github.com/wenbihan/coverage): ``image/<N>t.tif``
is forged, ``image/<N>.tif`` its original; ``mask/<N>forged.tif`` marks the
pasted region (white), beside ``<N>copy.tif`` (the source) and
``<N>paste.tif``. The forged-region mask is the localisation target, as in
the field. Split: ``test`` (forged) and ``authentic`` (originals).
"""

from __future__ import annotations

import os
import re

from sdpal_jax.datasets import common


class Coverage(common.ForgeryBuilder):
  """COVERAGE: ``image/Nt.tif`` with ``mask/Nforged.tif``."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Clone or unpack github.com/wenbihan/coverage into manual_dir:
  manual_dir/image/{N}.tif, manual_dir/image/{N}t.tif
  manual_dir/mask/{N}forged.tif
"""
  HOMEPAGE = "https://github.com/wenbihan/coverage"
  CITATION = """@inproceedings{wen2016coverage, title={COVERAGE - A novel database for copy-move
forgery detection}, author={Wen, Bihan and others}, booktitle={ICIP}, year={2016}}"""

  def _items(self, root):
    masks = os.path.join(root, "mask")
    tampered, authentic = [], []
    for path in common.list_images(os.path.join(root, "image")):
      stem = os.path.splitext(os.path.basename(path))[0]
      match = re.fullmatch(r"(\d+)t", stem)
      if match:
        tampered.append(common.tampered_item(path, common.find_mask(masks, [match[1] + "forged"])))
      elif stem.isdigit():
        authentic.append(common.Item(path))
    return {"test": tampered, "authentic": authentic}
