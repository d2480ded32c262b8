"""TampCOCO (Kwon et al., "Learning JPEG compression artifacts for image manipulation
detection and localization", IJCV 2022 — CAT-Net).

Four synthetic subsets made from COCO: ``sp`` (splicing), ``cm`` (copy-move),
``bcm`` (copy-move with blurred borders) and ``bcmc`` (``bcm`` then JPEG
compressed). CAT-Net describes each subset by a list file
``<subset>_COCO_list.txt`` whose lines are ``image_path,mask_path`` relative to
the dataset root; masks are white = tampered. When a list is absent, the
folder pair ``<subset>_images/`` + ``<subset>_masks/`` (masks matched by stem)
is used. Splits ``train`` / ``validation`` / ``test`` (90 / 5 / 5 by a
file-name hash).
"""

from __future__ import annotations

import dataclasses
import os

import tensorflow_datasets as tfds

from sdpal_jax.datasets import common
from sdpal_jax.datasets.sources import parse_forgery_list

SUBSETS = {
  "sp": "splicing",
  "cm": "copy-move",
  "bcm": "copy-move with blurred borders",
  "bcmc": "blurred copy-move, JPEG compressed",
}


@dataclasses.dataclass
class TampCocoConfig(tfds.core.BuilderConfig):
  subset: str = "sp"


class TampCoco(common.ForgeryBuilder):
  """TampCOCO: one builder config per CAT-Net subset."""

  name = "tampcoco"

  BUILDER_CONFIGS = [
    TampCocoConfig(name=name, subset=name, description=text) for name, text in SUBSETS.items()
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Unpack tampCOCO (CAT-Net, github.com/mjkwon2021/CAT-Net) into manual_dir, with its list files:
  manual_dir/<subset>_COCO_list.txt   (lines: image_path,mask_path relative to manual_dir)
or the folders manual_dir/<subset>_images/*.jpg and manual_dir/<subset>_masks/*.png,
for <subset> in sp, cm, bcm, bcmc.
"""
  HOMEPAGE = "https://github.com/mjkwon2021/CAT-Net"

  def _items(self, root):
    subset = self.builder_config.subset
    fractions = {"train": 0.9, "validation": 0.05, "test": 0.05}
    splits = {"train": [], "validation": [], "test": []}
    list_path = os.path.join(root, f"{subset}_COCO_list.txt")
    if os.path.exists(list_path):
      pairs = parse_forgery_list(list_path)
      items = [common.tampered_item(image, mask) for image, mask in pairs]
    else:
      masks = os.path.join(root, f"{subset}_masks")
      items = [
        common.tampered_item(p, common.find_mask(masks, [os.path.splitext(os.path.basename(p))[0]]))
        for p in common.list_images(os.path.join(root, f"{subset}_images"))
      ]
    for item in items:
      splits[common.hash_split(item.image, fractions)].append(item)
    return splits
