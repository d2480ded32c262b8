"""``synthetic_forgery``: realistic forgeries made locally from photos shipped in installed packages.

No download: the source photos are the real photographs bundled with
scikit-image (``skimage/data``), scikit-learn (``sklearn/datasets/images``) and
matplotlib (``mpl-data/sample_data/grace_hopper.jpg``).

Each tampered example applies one manipulation inside an irregular region
(a thresholded blob of smoothed noise, 3-20% of the image):

* ``splice`` — content from another photo of the pool, resampled and rotated,
  optionally JPEG-compressed at another quality first and with a different
  noise level, pasted with a feathered (blurred) or sharpened border;
* ``copymove`` — content of the same photo from elsewhere, resampled/rotated,
  with the same border and noise treatments;
* ``removal`` — the region is filled by diffusion from its surroundings
  (object removal by inpainting), which erases the sensor noise inside.

These are the traces forensic methods key on (resampling, blur/sharpening of
the border, noise-level and JPEG-quality mismatch). Every image, tampered or
not, is then re-compressed as a whole as JPEG (quality 70-95), so the
compression itself is no cue. About a third of the images are authentic
(global edits only: mild colour jitter, rescaling, the same re-compression)
with an empty mask. Masks are exact: the pixels whose pasted alpha is above
0.5, or the filled region.

Splits come from disjoint parts of every source photo: rows [0, 60%) feed
``train``, [60%, 75%) ``validation`` and [75%, 100%) ``test``; donors for
splicing come from the same split. Every example is a pure function of
(config, split, index): builds are deterministic.
"""

from __future__ import annotations

import dataclasses
import glob
import io
import os

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageFilter
from scipy import ndimage

from sdpal_jax.image_io import load_image

MANIPULATIONS = ("splice", "copymove", "removal")
SPLIT_ROWS = {"train": (0.0, 0.6), "validation": (0.6, 0.75), "test": (0.75, 1.0)}
_SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2}
_SKIMAGE_PHOTOS = (
  "astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png",
  "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png",
  "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg",
)  # fmt: skip


def source_photo_paths() -> list[str]:
  """The real photographs bundled with scikit-image, scikit-learn and matplotlib."""
  import matplotlib  # noqa: PLC0415
  import skimage  # noqa: PLC0415
  import sklearn  # noqa: PLC0415

  paths = [os.path.join(os.path.dirname(skimage.__file__), "data", n) for n in _SKIMAGE_PHOTOS]
  paths += sorted(
    glob.glob(os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images", "*.jpg"))
  )
  paths.append(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"))
  return [p for p in paths if os.path.exists(p)]


@dataclasses.dataclass
class SyntheticForgeryConfig(tfds.core.BuilderConfig):
  """Which manipulations, how many images of what size."""

  manipulations: tuple[str, ...] = MANIPULATIONS
  image_size: int = 256
  num_train: int = 1200
  num_validation: int = 150
  num_test: int = 300
  authentic_fraction: float = 1 / 3
  seed: int = 0


# --- pieces of the generator (pure functions of an rng) ---------------------


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality))
  return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def _crop(photo: np.ndarray, split: str, size: int, rng: np.random.Generator) -> np.ndarray:
  """A random square window inside the split's rows of ``photo``, resampled to ``size``."""
  h, w = photo.shape[:2]
  top, bottom = (int(round(f * h)) for f in SPLIT_ROWS[split])
  region = photo[top:bottom]
  side_max = min(region.shape[0], w)
  side = int(rng.uniform(0.6, 1.0) * side_max)
  y = int(rng.integers(0, region.shape[0] - side + 1))
  x = int(rng.integers(0, w - side + 1))
  window = region[y : y + side, x : x + side]
  return np.asarray(Image.fromarray(window).resize((size, size), Image.BICUBIC))


def _blob_mask(size: int, rng: np.random.Generator) -> np.ndarray:
  """An irregular connected region covering roughly 3-20% of the image, bool ``[size, size]``."""
  target = rng.uniform(0.03, 0.20)
  for _ in range(20):
    noise = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma=size / rng.uniform(8, 16))
    cy, cx = rng.uniform(0.25, 0.75, 2) * size
    yy, xx = np.mgrid[:size, :size]
    radius = np.sqrt(target / np.pi) * size
    bump = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
    field = bump + noise / (noise.std() + 1e-9) * 0.25
    mask = field > np.quantile(field, 1 - target)
    labels, count = ndimage.label(mask)
    if count:
      largest = np.argmax(ndimage.sum(mask, labels, range(1, count + 1))) + 1
      mask = labels == largest
      if mask.mean() > 0.02:
        return ndimage.binary_fill_holes(mask)
  return mask


def _warp(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Resampling: random rotation and scale about the centre, same size out."""
  h, w = patch.shape[:2]
  image = Image.fromarray(patch)
  scale = rng.uniform(0.7, 1.4)
  image = image.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.BILINEAR)
  image = image.rotate(rng.uniform(-30, 30), resample=Image.BILINEAR, expand=False)
  out = Image.new("RGB", (w, h))
  out.paste(image, ((w - image.width) // 2, (h - image.height) // 2))
  return np.asarray(out)


def _paste(
  host: np.ndarray, content: np.ndarray, region: np.ndarray, rng
) -> tuple[np.ndarray, np.ndarray]:
  """Composites ``content`` into ``host`` over ``region`` with forger-style border treatments."""
  if rng.random() < 0.5:
    content = _jpeg(content, rng.integers(50, 90))  # JPEG-quality mismatch
  if rng.random() < 0.5:
    content = np.clip(content + rng.normal(0, rng.uniform(2, 6), content.shape), 0, 255)
  alpha = region.astype(np.float32)
  if rng.random() < 0.6:
    alpha = ndimage.gaussian_filter(alpha, sigma=rng.uniform(0.7, 2.5))  # feathered border
  out = host * (1 - alpha[..., None]) + content * alpha[..., None]
  out = np.clip(out, 0, 255).astype(np.uint8)
  if rng.random() < 0.3:  # sharpened border
    band = ndimage.binary_dilation(region, iterations=2) & ~ndimage.binary_erosion(
      region, iterations=2
    )
    sharp = np.asarray(Image.fromarray(out).filter(ImageFilter.UnsharpMask(2, 150, 2)))
    out = np.where(band[..., None], sharp, out)
  return out, alpha > 0.5


def _diffusion_fill(image: np.ndarray, region: np.ndarray) -> np.ndarray:
  """Fills ``region`` by repeated blurring with the known pixels held fixed (inpainting)."""
  out = image.astype(np.float32)
  out[region] = out[~region].mean(axis=0)
  for sigma in (8, 6, 4, 3, 2, 2, 1.5, 1.5, 1, 1, 1, 1):
    blurred = ndimage.gaussian_filter(out, sigma=(sigma, sigma, 0))
    out[region] = blurred[region]
  return np.clip(out, 0, 255).astype(np.uint8)


def make_example(photos: list[np.ndarray], split: str, index: int, config: SyntheticForgeryConfig):
  """One example: (image uint8 [S,S,3], mask uint8 [S,S,1], manipulation name)."""
  rng = np.random.default_rng([config.seed, _SPLIT_SEEDS[split], index])
  size = config.image_size
  host_id = int(rng.integers(len(photos)))
  image = _crop(photos[host_id], split, size, rng)
  region = np.zeros((size, size), bool)
  manipulation = "authentic"
  if rng.random() >= config.authentic_fraction:
    manipulation = str(rng.choice(config.manipulations))
    region = _blob_mask(size, rng)
    if manipulation == "splice":
      donor_id = (host_id + 1 + int(rng.integers(len(photos) - 1))) % len(photos)
      donor = _warp(_crop(photos[donor_id], split, size, rng), rng)
      image, region = _paste(image, donor, region, rng)
    elif manipulation == "copymove":
      shift = rng.integers(size // 6, size // 2, 2) * rng.choice([-1, 1], 2)
      moved = _warp(np.roll(image, tuple(int(s) for s in shift), axis=(0, 1)), rng)
      image, region = _paste(image, moved, region, rng)
    else:
      image = _diffusion_fill(image, region)
  else:  # global edits only
    image = np.clip(image * rng.uniform(0.9, 1.1, 3) + rng.uniform(-8, 8), 0, 255).astype(np.uint8)
  image = _jpeg(image, rng.integers(70, 96))
  return image, region.astype(np.uint8)[..., None], manipulation


class SyntheticForgery(tfds.core.GeneratorBasedBuilder):
  """Locally generated image forgeries with exact masks (see the module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Splice, copy-move and removal from bundled photos."}
  BUILDER_CONFIGS = [
    SyntheticForgeryConfig(name="mixed", description="Splice, copy-move and removal."),
    SyntheticForgeryConfig(name="splice", manipulations=("splice",), description="Splicing only."),
    SyntheticForgeryConfig(name="copymove", manipulations=("copymove",), description="Copy-move only."),
    SyntheticForgeryConfig(name="removal", manipulations=("removal",), description="Removal only."),
    SyntheticForgeryConfig(
      name="mixed_small", image_size=128, num_train=600, num_validation=60, num_test=150,
      description="A quicker mixed set at 128x128.",
    ),
    *[
      SyntheticForgeryConfig(
        name=f"{kind}_small", manipulations=(kind,), image_size=128, num_train=600,
        num_validation=60, num_test=150, description=f"{kind} only, at 128x128.",
      )
      for kind in MANIPULATIONS
    ],
    SyntheticForgeryConfig(
      name="mixed_tiny", image_size=64, num_train=12, num_validation=6, num_test=6,
      description="A handful of 64x64 images for tests.",
    ),
  ]  # fmt: skip

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
          "mask": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
          "tampered": tfds.features.ClassLabel(names=["authentic", "tampered"]),
          "manipulation": tfds.features.Text(),
          "file_name": tfds.features.Text(),
        }
      ),
      supervised_keys=("image", "mask"),
      homepage="https://github.com/",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    counts = {
      "train": self.builder_config.num_train,
      "validation": self.builder_config.num_validation,
      "test": self.builder_config.num_test,
    }
    return {split: self._generate_examples(split, n) for split, n in counts.items()}

  def _generate_examples(self, split: str, count: int):
    photos = [load_image(p) for p in source_photo_paths()]
    for index in range(count):
      image, mask, manipulation = make_example(photos, split, index, self.builder_config)
      name = f"{split}_{index:05d}"
      yield (
        name,
        {
          "image": image,
          "mask": mask,
          "tampered": int(manipulation != "authentic"),
          "manipulation": manipulation,
          "file_name": name,
        },
      )
