"""CocoGlide (Guillaro et al., "TruFor", CVPR 2023): 512 COCO images locally inpainted by GLIDE.

Layout of TruFor's archive: ``fake/<name>.png`` (inpainted), ``mask/<name>.png``
(white = inpainted; mask names may carry ``_mask`` in place of a trailing
``_up``/``_fake``) and ``real/<name>.png`` (the originals). Split: ``test``
(fake + real), a test-only set as in TruFor.
"""

from __future__ import annotations

import os
import re

from sdpal_jax.datasets import common


class Cocoglide(common.ForgeryBuilder):
  """CocoGlide: fake/ + mask/ (+ real/)."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Unpack CocoGlide (github.com/grip-unina/TruFor) into manual_dir:
  manual_dir/fake/*.png, manual_dir/mask/*.png, manual_dir/real/*.png
"""
  HOMEPAGE = "https://github.com/grip-unina/TruFor"

  def _items(self, root):
    masks = os.path.join(root, "mask")
    items = []
    for path in common.list_images(os.path.join(root, "fake")):
      stem = os.path.splitext(os.path.basename(path))[0]
      base = re.sub(r"_(up|fake)$", "", stem)
      items.append(
        common.tampered_item(path, common.find_mask(masks, [stem, base + "_mask", base]))
      )
    items += [common.Item(p) for p in common.list_images(os.path.join(root, "real"))]
    return {"test": items}
