"""IMD2020 real-life manipulated images (Novozamsky, Mahdian & Saic, WACV-W 2020).

2,010 manipulated photos from the internet, filed with their originals, one
folder per original (staff.utia.cas.cz/novozada/db, "IMD2020 - real-life
manipulated images"). The archive's two naming schemes (as drawn in the
IMD2020 loaders of e.g. github.com/cainspencerm/image-manipulation-datasets and
CAT-Net/TruFor's ``IMD2020_wild/1a07yi/...``)::

  1a1ogs/1a1ogs_orig.jpg                  the original (authentic)
  1a1ogs/c8tf5mq_0.png                    a manipulated version, named by its own id
  1a1ogs/c8tf5mq_0_mask.png               its mask (white = manipulated)
  z41/00109_orig.jpg, z41/00109_fake.jpg, z41/00109_fake_mask.png

Every photo that is neither ``*_orig`` nor ``*_mask`` is a manipulated one
with mask ``<its stem>_mask.*``. A manipulated photo's id is not its
original's, so photos are split by their folder: ``train`` / ``validation`` /
``test`` = 80 / 10 / 10 by a hash of the folder name, and a photo and its
original never straddle splits. Masks of another size than their photo (one in
the release, listed by SunnyHaze/IML-Dataset-Corrections): see
:func:`common.screen_mask_sizes`.

Configs: ``imd2020`` (= ``imd2020/default``) holds the manipulated photos and
their originals (all-zero masks); ``imd2020/tampered`` the manipulated photos
only, in the same splits, as the SDPAL release trains and validates
(``IMD2020_tamp_{train,valid}.lst``, its main.py L184, L192).
"""

from __future__ import annotations

import dataclasses
import os

import tensorflow_datasets as tfds

from sdpal_jax.datasets import common


@dataclasses.dataclass
class Imd2020Config(tfds.core.BuilderConfig):
  """``tampered_only``: leave the ``*_orig`` photos out."""

  tampered_only: bool = False


class Imd2020(common.ForgeryBuilder):
  """IMD2020: ``*_orig`` authentic, every other photo manipulated with ``<stem>_mask.png``."""

  BUILDER_CONFIGS = [
    Imd2020Config(name="default", description="Manipulated photos and their originals."),
    Imd2020Config(
      name="tampered",
      tampered_only=True,
      description="Manipulated photos only (the SDPAL release's IMD2020_tamp lists).",
    ),
  ]

  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Unpack "IMD2020 - real-life manipulated images" into manual_dir (one folder per original):
  manual_dir/<folder>/<folder>_orig.jpg
  manual_dir/<folder>/<id>_0.jpg, manual_dir/<folder>/<id>_0_mask.png   (or <n>_fake.jpg,
      <n>_fake_mask.png)
"""
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
    "1.0.0": "First release.",
    "1.1.0": "<n>_fake photos included; split by folder (a photo's id is not its original's); "
    "masks of another size resized or skipped by rule, logged.",
  }
  HOMEPAGE = "http://staff.utia.cas.cz/novozada/db/"

  def _items(self, root):
    splits = {"train": [], "validation": [], "test": []}
    fractions = {"train": 0.8, "validation": 0.1, "test": 0.1}
    for directory, _, files in sorted(os.walk(root)):
      folder = os.path.relpath(directory, root)
      for name in sorted(files):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in common.IMAGE_EXTENSIONS or name.startswith("."):
          continue
        if stem.lower().endswith("_mask"):
          continue
        path = os.path.join(directory, name)
        split = common.hash_split(folder, fractions)
        if stem.lower().endswith("_orig"):
          if not self.builder_config.tampered_only:
            splits[split].append(common.Item(path))
        else:
          splits[split].append(
            common.tampered_item(path, common.find_mask(directory, [stem + "_mask"]))
          )
    return {split: common.screen_mask_sizes(self.name, items) for split, items in splits.items()}
