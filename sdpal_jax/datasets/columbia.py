"""Columbia Uncompressed Image Splicing Detection (Hsu & Chang, ICME 2006).

180 spliced and 183 authentic uncompressed TIFF/BMP photos from four cameras
(ee.columbia.edu/ln/dvmm/downloads/authsplcuncmp: "2 directories ... 4cam_auth
& 4cam_splc"). Ground truth comes as colour-coded
``4cam_splc/edgemask/<stem>_edgemask.jpg``: the region of each of the two
cameras in its own colour, red (200, 0, 0) and green (0, 200, 0), each drawn
brighter (255) near the splicing boundary. The green regions (both shades)
are read as the spliced area, as the field's loaders read these masks. The
masks are JPEGs, so colours are thresholded (G > 127, R and B < 128), not
compared exactly. Only ``<stem>_edgemask.*`` is read; variants such as
``<stem>_edgemask_3.jpg`` are not masks of the photo's region. Copies that
nest the folders one level deeper (``4cam_splc/4cam_splc/``) or keep
``edgemask/`` beside the photos' folder are read too. Split: ``test``
(spliced) and ``authentic``.
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds

from sdpal_jax.datasets import common


def _under(path: str, root: str, folder: str) -> bool:
  return folder in os.path.relpath(path, root).lower().split(os.sep)[:-1]


class Columbia(common.ForgeryBuilder):
  """Columbia uncompressed splicing: colour-coded edge masks, green = spliced."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Unpack the Columbia uncompressed splicing archives (4cam_auth, 4cam_splc) into manual_dir:
  manual_dir/4cam_auth/*.tif                         (183)
  manual_dir/4cam_splc/*.tif                         (180)
  manual_dir/4cam_splc/edgemask/*_edgemask.jpg
"""
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
    "1.0.0": "First release.",
    "1.1.0": "Nested folders read; masks of another size resized or skipped by rule, logged.",
  }
  HOMEPAGE = "https://www.ee.columbia.edu/ln/dvmm/downloads/authsplcuncmp/"
  CITATION = """@inproceedings{hsu2006columbia, title={Detecting image splicing using geometry
invariants and camera characteristics consistency}, author={Hsu, Yu-Feng and Chang, Shih-Fu},
booktitle={ICME}, year={2006}}"""

  def _items(self, root):
    photos, masks = [], {}
    for directory, _, files in sorted(os.walk(root)):
      for name in sorted(files):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in common.IMAGE_EXTENSIONS or name.startswith("."):
          continue
        path = os.path.join(directory, name)
        if stem.lower().endswith("_edgemask"):
          masks.setdefault(stem[: -len("_edgemask")].lower(), path)
        elif not _under(path, root, "edgemask"):
          photos.append(path)
    tampered, authentic = [], []
    for path in photos:
      if _under(path, root, "4cam_splc"):
        stem = os.path.splitext(os.path.basename(path))[0].lower()
        tampered.append(common.tampered_item(path, masks.get(stem), "green"))
      elif _under(path, root, "4cam_auth"):
        authentic.append(common.Item(path))
    return {"test": common.screen_mask_sizes(self.name, tampered), "authentic": authentic}
