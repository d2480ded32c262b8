"""FantasticReality (Kniaz, Knyaz & Remondino, NeurIPS 2019).

16k real and 16k spliced photos with pixel masks. Layout assumed (the
dataset's archive ``dataset.zip``, as described on its page and read by the
SDPAL release's lists): ``ColorRealImages/*.jpg`` (authentic),
``ColorFakeImages/*.jpg`` (spliced) and ``masks/<stem>.png`` (white =
spliced; ``.tif`` also accepted). This layout could not be checked against the
archive itself here; a different one can be fed as a ``.lst`` source. Splits
``train`` / ``validation`` / ``test`` (80 / 10 / 10 by a file-name hash).
"""

from __future__ import annotations

import os

from sdpal_jax.datasets import common


class FantasticReality(common.ForgeryBuilder):
  """FantasticReality: ColorRealImages / ColorFakeImages / masks."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Unpack FantasticReality (from the authors, see the paper) into manual_dir:
  manual_dir/ColorRealImages/*.jpg
  manual_dir/ColorFakeImages/*.jpg
  manual_dir/masks/<fake image stem>.png
"""
  CITATION = """@inproceedings{kniaz2019point, title={The point where reality meets fantasy: Mixed
adversarial generators for image splice detection}, author={Kniaz, Vladimir V and Knyaz, Vladimir
and Remondino, Fabio}, booktitle={NeurIPS}, year={2019}}"""

  def _items(self, root):
    fractions = {"train": 0.8, "validation": 0.1, "test": 0.1}
    splits = {"train": [], "validation": [], "test": []}
    masks = os.path.join(root, "masks")
    for path in common.list_images(os.path.join(root, "ColorFakeImages")):
      stem = os.path.splitext(os.path.basename(path))[0]
      item = common.tampered_item(path, common.find_mask(masks, [stem, stem + "_mask"]))
      splits[common.hash_split(path, fractions)].append(item)
    for path in common.list_images(os.path.join(root, "ColorRealImages")):
      splits[common.hash_split(path, fractions)].append(common.Item(path))
    return splits
