"""Columbia Uncompressed Image Splicing Detection (Hsu & Chang, ICME 2006).

180 spliced and 183 authentic uncompressed TIFFs from four cameras
(ee.columbia.edu/ln/dvmm/downloads/authsplcuncmp). Ground truth comes as
colour-coded ``edgemask/<stem>_edgemask.jpg``: the two source regions are drawn
in two colours; the spliced one is green, as in the evaluation code of the
field (e.g. TruFor/IMDL-BenCo loaders read the green channel). The masks are
JPEGs, so colours are thresholded (G > 127, R and B < 128), not compared
exactly. Split: ``test`` (spliced) and ``authentic``.
"""

from __future__ import annotations

import os

from sdpal_jax.datasets import common


class Columbia(common.ForgeryBuilder):
  """Columbia uncompressed splicing: colour-coded edge masks, green = spliced."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Unpack the Columbia uncompressed splicing archive into manual_dir:
  manual_dir/4cam_auth/*.tif
  manual_dir/4cam_splc/*.tif
  manual_dir/4cam_splc/edgemask/*_edgemask.jpg
"""
  HOMEPAGE = "https://www.ee.columbia.edu/ln/dvmm/downloads/authsplcuncmp/"
  CITATION = """@inproceedings{hsu2006columbia, title={Detecting image splicing using geometry
invariants and camera characteristics consistency}, author={Hsu, Yu-Feng and Chang, Shih-Fu},
booktitle={ICME}, year={2006}}"""

  def _items(self, root):
    spliced = os.path.join(root, "4cam_splc")
    edges = os.path.join(spliced, "edgemask")
    tampered = [
      common.tampered_item(
        path,
        common.find_mask(edges, [os.path.splitext(os.path.basename(path))[0] + "_edgemask"]),
        "green",
      )
      for path in common.list_images(spliced)
    ]
    authentic = [common.Item(p) for p in common.list_images(os.path.join(root, "4cam_auth"))]
    return {"test": tampered, "authentic": authentic}
