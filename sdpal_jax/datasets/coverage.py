"""COVERAGE copy-move forgery dataset (Wen et al., ICIP 2016).

100 forged / original pairs (github.com/wenbihan/coverage, the release
corrected on 2017-09-27). Its ``readme.txt`` lays it out as ``image/<N>.tif``
(original) and ``image/<N>t.tif`` (tampered), ``mask/<N>copy.tif`` (the
duplicated, source region), ``mask/<N>paste.tif`` (the similar-but-genuine
object the forgery covers) and ``mask/<N>forged.tif`` (the forged region), N =
1..100, white = region. The forged-region mask is the localisation target, as
in the field's lists (e.g. MVSS-Net's ``data/COVERAGE.txt``: ``<N>t.tif`` with
``<N>forged.tif``); checked on the release: ``forged`` covers the pixels where
``Nt.tif`` differs from ``N.tif``, ``copy`` lies elsewhere, ``paste`` mostly
overlaps ``forged``. Splits: ``test`` (tampered) and ``authentic`` (originals).

Masks of another size than their image. In the release the three masks of 9
photos are (WxH; SunnyHaze/IML-Dataset-Corrections lists the same 9)::

  41t.tif 588x376, masks 715x376      57t.tif 551x342, masks 641x342
  48t.tif 516x476, masks 516x626      58t.tif 565x401, masks 685x401
  55t.tif 485x158, masks 808x264      59t.tif 526x477, masks 526x547
  56t.tif 576x214, masks 720x267      61t.tif 542x484, masks 792x484
  95t.tif 579x314, masks 724x392

55, 56 and 95 are drawn at another resolution with the image's aspect ratio:
their masks are resized to the image with nearest neighbour (a warning names
each). The other 6 differ in one side only: their masks were drawn on another
crop of the photo (e.g. 57's forged region lines up with the image after
cutting 90 columns off the mask's right side, 48's after cutting 150 rows off
its top), so neither resizing nor a fixed crop places the region right; those
photos are skipped, each by name with both sizes, which is what MVSS-Net's
``evaluate.py`` does with any pair whose sizes differ. IMDL-BenCo instead
requires equal sizes and uses the masks the IML-ViT authors corrected by hand
(SunnyHaze/IML-Dataset-Corrections): put those into ``mask/`` and all 100 are
used. The rule is :func:`common.screen_mask_sizes`.
"""

from __future__ import annotations

import os
import re

import tensorflow_datasets as tfds

from sdpal_jax.datasets import common


class Coverage(common.ForgeryBuilder):
  """COVERAGE: ``image/Nt.tif`` with ``mask/Nforged.tif``; originals ``image/N.tif``."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Clone or unpack github.com/wenbihan/coverage (as its readme.txt lays it out) into manual_dir:
  manual_dir/image/{N}.tif, manual_dir/image/{N}t.tif      (N = 1..100)
  manual_dir/mask/{N}forged.tif                            (also {N}copy.tif, {N}paste.tif: unused)
"""
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
    "1.0.0": "First release.",
    "1.1.0": "Masks of another size: rescaled ones resized, the 6 drawn on another crop skipped; "
    "each logged.",
  }
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
    return {"test": common.screen_mask_sizes(self.name, tampered), "authentic": authentic}
