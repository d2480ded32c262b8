"""``synthetic_forgery``: forgeries generated locally from real photographs, with exact masks.

Photos: by default the real photographs bundled with installed packages
(scikit-image ``skimage/data``, scikit-learn ``sklearn/datasets/images``,
matplotlib's ``grace_hopper.jpg``: 18 photos, no download). The ``photos*``
configs (``photos``, ``photos_small``, ``photos_large``, ``photos_large_unwarped``)
read every image under ``manual_dir`` instead (any folder of the user's own
photos, recursively), the way TampCOCO was made from
COCO (Kwon et al., "Learning JPEG compression artifacts for image manipulation
detection and localization", IJCV 2022).

What a generated forgery carries, after what real archives show:

* **Each photo is a camera JPEG first.** A window of the photo, downscaled by
  at most 2.5x (mostly less, so the sensor noise survives), is JPEG-compressed
  at its own quality (70-98), as the authentic photos of CASIA v1.0 (Corel
  JPEGs, Dong et al., "CASIA image tampering detection evaluation database",
  ChinaSIP 2013) are; host and donor get different qualities and noise.
* **Object-shaped regions.** Most regions are segments of the photo they are
  cut from (Felzenszwalb-Huttenlocher graph segmentation, merged with
  neighbours up to the target size, holes filled): their borders follow real
  edges, as CASIA's hand-cut objects do. The rest are irregular blobs.
* ``splice``: an object of another photo, rescaled (0.6-1.5x) and rotated
  (+-30 degrees) so its JPEG grid no longer lines up, optionally recoloured
  (brightness, contrast, gamma), pasted at a random place with a hard,
  feathered or sharpened border.
* ``copymove``: an object of the same photo, moved, rescaled and rotated
  (COVERAGE's similar-but-genuine objects: Wen et al., "COVERAGE - a novel
  database for copy-move forgery detection", ICIP 2016).
* ``removal``: an object filled by diffusion from its surroundings
  (inpainting), which erases the sensor noise and JPEG grid inside.

The tampered photo is then saved once more: as JPEG (quality 65-95, a double
compression whose grid is aligned everywhere but in the pasted region) with
probability 3/4, otherwise losslessly (COVERAGE ships TIFFs). Authentic
examples (``authentic_fraction``) go through the same camera and final
compression with global edits only and an empty mask, so compression alone
is no cue. The mask is the pasted (destination) region: alpha > 0.5.

Splits: with the bundled photos (too few to split by photo), rows
[0, 60%) of every photo feed ``train``, [60%, 75%) ``validation`` and
[75%, 100%) ``test``; with ``manual_dir`` photos each photo belongs to one
split (SHA-1 of its relative path: 80/10/10). Donors come from the same
split. Every example is a pure function of (config, split, index, photos):
builds are deterministic.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import importlib.util
import io
import os

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image, ImageFilter
from scipy import ndimage
from skimage.segmentation import felzenszwalb

from sdpal_jax.errors import ImageReadError, SdpalError
from sdpal_jax.image_io import IMAGE_EXTENSIONS, load_image

MANIPULATIONS = ("splice", "copymove", "removal")
# Removal is rarer: the public test sets (CASIA v1.0, COVERAGE) hold splices and copy-moves.
MANIPULATION_WEIGHTS = {"splice": 3.0, "copymove": 3.0, "removal": 1.0}
SPLIT_ROWS = {"train": (0.0, 0.6), "validation": (0.6, 0.75), "test": (0.75, 1.0)}
# Share of manual_dir photos per split (by the SHA-1 of the relative path, in percent).
PHOTO_SPLIT_PERCENT = {"train": (0, 80), "validation": (80, 90), "test": (90, 100)}
_SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2}
_SKIMAGE_PHOTOS = (
  "astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png",
  "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png",
  "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg",
)  # fmt: skip
_MAX_DOWNSCALE = 2.5


def _package_dir(name: str) -> str:
  """An installed package's folder, found without importing it (sklearn alone takes ~1 s)."""
  return os.path.dirname(importlib.util.find_spec(name).origin)


def source_photo_paths() -> list[str]:
  """The real photographs bundled with scikit-image, scikit-learn and matplotlib."""
  paths = [os.path.join(_package_dir("skimage"), "data", n) for n in _SKIMAGE_PHOTOS]
  paths += sorted(glob.glob(os.path.join(_package_dir("sklearn"), "datasets", "images", "*.jpg")))
  paths.append(
    os.path.join(_package_dir("matplotlib"), "mpl-data", "sample_data", "grace_hopper.jpg")
  )
  return [p for p in paths if os.path.exists(p)]


def photo_split(relative_path: str) -> str:
  """The split a ``manual_dir`` photo belongs to, by the SHA-1 of its relative path."""
  percent = int(hashlib.sha1(relative_path.encode("utf-8")).hexdigest(), 16) % 100
  return next(s for s, (lo, hi) in PHOTO_SPLIT_PERCENT.items() if lo <= percent < hi)


def folder_photo_paths(root: str) -> list[str]:
  """Every image file under ``root`` (recursively, sorted), hidden files left out."""
  found = []
  for folder, dirs, files in os.walk(root):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    found += [
      os.path.join(folder, n)
      for n in files
      if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")
    ]
  return sorted(found)


@dataclasses.dataclass
class SyntheticForgeryConfig(tfds.core.BuilderConfig):
  """Which manipulations, how many images of what size, and whose photos.

  ``photos_from_manual_dir``: generate from the photos under ``manual_dir``
  (split by photo) instead of the bundled ones (split by rows).
  ``object_region_fraction``: share of regions cut along image segments.
  ``varied_jpeg_tables``: every JPEG save uses its own quantisation tables
  (``_quantisation_tables``) instead of libjpeg's scaled standard ones.
  ``misaligned_grid``: the host photo's camera JPEG grid is shifted by 0-7
  pixels against the final save's (non-aligned double compression).
  ``uniform_position``: every pixel is about equally likely to be tampered.
  By default a pasted region lands wholly inside the frame and a removed one
  away from its border, so tampered pixels crowd the middle (a "the middle
  is tampered" map scores pooled AUC 0.77 on mixed_small's test split, as it
  does 0.66 / 0.75 on CASIA v1 / COVERAGE: ``sdpal_jax.baselines``); with
  this set, pasted regions may run off the frame (at least a quarter stays
  inside) and removed regions are blobs centred anywhere, so a network can
  learn nothing from where a region is.
  ``balanced_traces``: how smooth or noisy a region is no longer tells
  whether it was tampered. By default every pasted region is resampled
  (bilinear: smoother than its host) and every removed one diffusion-filled
  (no noise at all), so a network that sees high-pass residuals can learn
  "smooth is tampered", which real photos contradict (skies, defocus): with
  SRM residuals, 400 steps on mixed_small rank CASIA v1's pixels below chance
  at 128 px, on this config near chance (docs/results/real_data). With
  this set, half the pasted regions get fresh noise (std 1.5-6, 0..255
  units), removed regions get noise like their surroundings' two times in
  three, and a third of all photos (authentic ones too) have an untouched
  blob blurred (sigma 0.8-2.5, as defocus) and stay labelled authentic there.
  ``unwarped_fraction``: share of splices and copy-moves whose region is only
  moved (whole pixels, no rescaling or rotation), so no resampling trace marks
  it: what is left is its shifted JPEG grid, its border and, for a copy-move,
  an exact duplicate elsewhere in the photo. CASIA v1.0's file names code the
  operations applied to the pasted region (third field, ``N`` for none in each
  of its three letters): 562 of the 920 tampered images ``casia_v1`` builds are ``NNN``.
  """

  manipulations: tuple[str, ...] = MANIPULATIONS
  image_size: int = 256
  num_train: int = 1200
  num_validation: int = 150
  num_test: int = 300
  authentic_fraction: float = 1 / 3
  object_region_fraction: float = 0.7
  photos_from_manual_dir: bool = False
  varied_jpeg_tables: bool = False
  misaligned_grid: bool = False
  uniform_position: bool = False
  balanced_traces: bool = False
  unwarped_fraction: float = 0.0
  seed: int = 0


# --- pieces of the generator (pure functions of an rng) ---------------------


# The JPEG standard's example tables (ITU-T T.81, Annex K, tables K.1 and K.2), row by row:
# what libjpeg scales by the quality setting.
_STANDARD_LUMINANCE = (
  16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
  14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
  18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
  49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
_STANDARD_CHROMINANCE = (17, 18, 24, 47, *(99,) * 4, 18, 21, 26, 66, *(99,) * 4,
                         24, 26, 56, *(99,) * 5, 47, 66, *(99,) * 6, *(99,) * 32)  # fmt: skip


def _quantisation_tables(quality: int, rng: np.random.Generator) -> list[list[int]]:
  """Luminance and chrominance tables of ``quality``, each entry scaled by its own 0.7-1.3.

  Cameras and editors each bring their own tables (CAT-Net, Kwon et al.,
  IJCV 2022, trains on over a thousand); libjpeg's scaling of the standard
  tables alone would make every generated JPEG share one family.
  """
  scale = 5000 / quality if quality < 50 else 200 - 2 * quality
  tables = []
  for base in (_STANDARD_LUMINANCE, _STANDARD_CHROMINANCE):
    table = np.floor((np.asarray(base, np.float64) * scale + 50) / 100)
    table = np.round(table * rng.uniform(0.7, 1.3, 64))
    tables.append(np.clip(table, 1, 255).astype(int).tolist())
  return tables


def _jpeg(image: np.ndarray, quality: int, rng: np.random.Generator | None = None) -> np.ndarray:
  """JPEG round trip at ``quality``; with ``rng``, through ``_quantisation_tables`` of it."""
  buffer = io.BytesIO()
  options = {"quality": int(quality)}
  if rng is not None:
    options = {"qtables": _quantisation_tables(int(quality), rng)}
  Image.fromarray(image).save(buffer, format="JPEG", **options)
  return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def _window(region: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """A random square window of ``region`` downscaled to ``size`` by at most 2.5x (log-uniform)."""
  h, w = region.shape[:2]
  side_max = min(h, w)
  side_min = min(size, side_max)
  side_top = min(side_max, int(size * _MAX_DOWNSCALE))
  side = int(round(np.exp(rng.uniform(np.log(side_min), np.log(max(side_min, side_top))))))
  y = int(rng.integers(0, h - side + 1))
  x = int(rng.integers(0, w - side + 1))
  window = region[y : y + side, x : x + side]
  if side == size:
    return np.ascontiguousarray(window)
  return np.asarray(Image.fromarray(window).resize((size, size), Image.BICUBIC))


def _crop(photo: np.ndarray, split: str, size: int, rng: np.random.Generator) -> np.ndarray:
  """A window inside the split's rows of a bundled ``photo`` (see ``SPLIT_ROWS``), ``[S, S, 3]``."""
  h = photo.shape[0]
  top, bottom = (int(round(f * h)) for f in SPLIT_ROWS[split])
  return _window(photo[top:bottom], size, rng)


def _camera(photo: np.ndarray, rng: np.random.Generator, varied_tables: bool = False) -> np.ndarray:
  """What a camera leaves: sensor noise of some level, then its own JPEG compression."""
  if rng.random() < 0.5:
    photo = np.clip(photo + rng.normal(0, rng.uniform(0.5, 3.0), photo.shape), 0, 255)
  return _jpeg(photo.astype(np.uint8), rng.integers(70, 99), rng if varied_tables else None)


def _blob_mask(
  size: int, rng: np.random.Generator, target: float | None = None, anywhere: bool = False
) -> np.ndarray:
  """An irregular connected region covering roughly 3-20% of the image, bool ``[size, size]``.

  Centred in the middle half of the frame, or (``anywhere``) anywhere in it.
  """
  target = rng.uniform(0.03, 0.20) if target is None else target
  for _ in range(20):
    noise = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma=size / rng.uniform(8, 16))
    cy, cx = rng.uniform(*((0.0, 1.0) if anywhere else (0.25, 0.75)), 2) * size
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


def _object_mask(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """A region whose border follows edges of ``image``: merged graph segments, 3-20% of it.

  Segments by Felzenszwalb & Huttenlocher ("Efficient graph-based image
  segmentation", IJCV 2004; ``skimage.segmentation.felzenszwalb``); a seed
  segment away from the border grows by its largest neighbours until the
  target size. Falls back to a blob when no segment fits.
  """
  size = image.shape[0]
  target = rng.uniform(0.03, 0.20)
  segments = felzenszwalb(
    image, scale=float(rng.uniform(50, 400)), sigma=0.8, min_size=max(8, size * size // 400)
  )
  count = int(segments.max()) + 1
  areas = np.bincount(segments.ravel(), minlength=count) / segments.size
  edge = np.zeros(count, bool)
  edge[np.unique(np.concatenate([segments[0], segments[-1], segments[:, 0], segments[:, -1]]))] = (
    True
  )
  seeds = np.flatnonzero((areas < target * 1.5) & (areas > 0.003) & ~edge)
  if not len(seeds):
    return _blob_mask(size, rng, target)
  region = segments == int(rng.choice(seeds))
  for _ in range(count):
    if region.mean() >= target:
      break
    ring = ndimage.binary_dilation(region, iterations=2) & ~region
    neighbours = np.bincount(segments[ring], minlength=count)
    neighbours[edge] = 0
    neighbours[areas > target] = 0
    if not neighbours.any():
      break
    region |= segments == int(np.argmax(neighbours))
  region = ndimage.binary_fill_holes(ndimage.binary_opening(region, iterations=1))
  labels, n = ndimage.label(region)
  if n:
    region = labels == (np.argmax(ndimage.sum(region, labels, range(1, n + 1))) + 1)
  solid = ndimage.binary_erosion(region, iterations=2).sum() > 0.4 * region.sum()
  if not (0.01 < region.mean() < 0.35 and solid):  # thin slivers are no object
    return _blob_mask(size, rng, target)
  return region


def _region(image: np.ndarray, rng: np.random.Generator, object_fraction: float) -> np.ndarray:
  if rng.random() < object_fraction:
    return _object_mask(image, rng)
  return _blob_mask(image.shape[0], rng)


def _warp(
  content: np.ndarray,
  region: np.ndarray,
  rng: np.random.Generator,
  anywhere: bool = False,
  transform: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
  """Resample content and region together: rescale (0.6-1.5x), rotate (+-30 deg), move.

  With ``transform`` False the content is only moved by whole pixels: no
  resampling, so its pixels (and the JPEG grid they carry, now shifted) stay
  as they were. The region ends wholly inside the frame (its centre placed at random where
  it fits), or with ``anywhere`` its bounding box's corner is uniform over
  every place that leaves some of it in the frame (each pixel then equally
  likely to be covered), redrawn until at least a quarter of it is inside;
  returns (content uint8 [S,S,3], alpha float32 [S,S] in [0, 1]).
  """
  size = content.shape[0]
  rgba = np.concatenate([content, region[..., None].astype(np.uint8) * 255], axis=-1)
  image = Image.fromarray(rgba, "RGBA")
  scale, angle = (rng.uniform(0.6, 1.5), rng.uniform(-30, 30)) if transform else (1.0, 0.0)
  for attempt in range(2):  # a second try unscaled and upright always fits
    if attempt:
      scale, angle = 1.0, 0.0
    if scale == 1.0 and angle == 0.0:
      warped = rgba
    else:
      resized = image.resize((max(1, round(size * scale)),) * 2, Image.BILINEAR)
      warped = np.asarray(resized.rotate(angle, resample=Image.BILINEAR, expand=True))
    ys, xs = np.nonzero(warped[..., 3] > 127)
    if not len(ys):
      return content, region.astype(np.float32)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    if y1 - y0 <= size and x1 - x0 <= size:
      break
  placed = False
  if anywhere:
    inside = warped[..., 3] > 127
    for _ in range(20):
      dy = int(rng.integers(-(y1 - y0) + 1, size)) - y0
      dx = int(rng.integers(-(x1 - x0) + 1, size)) - x0
      kept = inside[max(0, -dy) : size - dy, max(0, -dx) : size - dx].sum()
      placed = kept >= 0.25 * inside.sum() and (dy, dx) != (0, 0)
      if placed:
        break
  if not placed:  # wholly inside (with ``anywhere``: rare, 20 draws kept too little)
    dy = int(rng.integers(0, size - (y1 - y0) + 1)) - y0
    dx = int(rng.integers(0, size - (x1 - x0) + 1)) - x0
  if scale == 1.0 and dy == 0 and dx == 0 and size > y1 - y0:  # a move must move
    dy = size - y1
  out = np.zeros((size, size, 4), np.uint8)
  ty0, tx0 = max(0, dy), max(0, dx)
  sy0, sx0 = max(0, -dy), max(0, -dx)
  h = min(size - ty0, warped.shape[0] - sy0)
  w = min(size - tx0, warped.shape[1] - sx0)
  out[ty0 : ty0 + h, tx0 : tx0 + w] = warped[sy0 : sy0 + h, sx0 : sx0 + w]
  return out[..., :3], (out[..., 3] > 127).astype(np.float32)


def _recolour(content: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Another photo's light: brightness, contrast and gamma changes."""
  x = content.astype(np.float32) / 255
  x = np.clip((x - 0.5) * rng.uniform(0.8, 1.25) + 0.5 + rng.uniform(-0.08, 0.08), 0, 1)
  x = x ** rng.uniform(0.8, 1.25) * rng.uniform(0.92, 1.08, 3)
  return np.clip(x * 255, 0, 255).astype(np.uint8)


def _paste(
  host: np.ndarray, content: np.ndarray, alpha: np.ndarray, rng
) -> tuple[np.ndarray, np.ndarray]:
  """Composites ``content`` into ``host`` where ``alpha``: a hard, feathered or sharpened border."""
  if rng.random() < 0.3:
    content = np.clip(content + rng.normal(0, rng.uniform(1, 5), content.shape), 0, 255)
  region = alpha > 0.5
  border = rng.random()
  if border < 0.35:
    alpha = ndimage.gaussian_filter(alpha, sigma=rng.uniform(0.5, 2.0))  # feathered
  out = host * (1 - alpha[..., None]) + content * alpha[..., None]
  out = np.clip(out, 0, 255).astype(np.uint8)
  if border > 0.85:  # sharpened border
    band = ndimage.binary_dilation(region, iterations=2) & ~ndimage.binary_erosion(
      region, iterations=2
    )
    sharp = np.asarray(Image.fromarray(out).filter(ImageFilter.UnsharpMask(2, 150, 2)))
    out = np.where(band[..., None], sharp, out)
  return out, alpha > 0.5


def _add_noise(image: np.ndarray, where: np.ndarray, std: float, rng) -> np.ndarray:
  """``image`` with N(0, std^2) noise (0..255 units) added inside ``where`` (bool [S, S])."""
  noisy = np.clip(image + rng.normal(0, std, image.shape), 0, 255).astype(np.uint8)
  return np.where(where[..., None], noisy, image)


def _noise_level(image: np.ndarray, region: np.ndarray) -> float:
  """Noise std per channel (0..255 units) just outside ``region``; at least 1.

  Immerkaer, "Fast noise variance estimation" (CVIU 1996): the Laplacian-
  difference kernel below cancels smooth content and multiplies white noise's
  std by 6 (the root of its squared weights' sum). The median absolute
  residual (0.6745 std for Gaussian noise) keeps edges out. Measured in a
  6-pixel band around the region, every channel pooled.
  """
  kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)[..., None]
  residual = np.abs(ndimage.convolve(image.astype(np.float32), kernel))
  band = ndimage.binary_dilation(region, iterations=6) & ~region
  if not band.any():
    return 1.0
  return max(1.0, float(np.median(residual[band])) / (0.6745 * 6))


def _defocus_decoy(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """An untouched photo with a blob blurred as defocus would (not a forgery: its mask stays 0)."""
  blob = _blob_mask(image.shape[0], rng, anywhere=True)
  blurred = ndimage.gaussian_filter(
    image.astype(np.float32), sigma=(*(rng.uniform(0.8, 2.5),) * 2, 0)
  )
  return np.where(blob[..., None], np.clip(blurred, 0, 255).astype(np.uint8), image)


def _diffusion_fill(image: np.ndarray, region: np.ndarray) -> np.ndarray:
  """Fills ``region`` by repeated blurring with the known pixels held fixed (inpainting)."""
  out = image.astype(np.float32)
  out[region] = out[~region].mean(axis=0)
  for sigma in (8, 6, 4, 3, 2, 2, 1.5, 1.5, 1, 1, 1, 1):
    blurred = ndimage.gaussian_filter(out, sigma=(sigma, sigma, 0))
    out[region] = blurred[region]
  return np.clip(out, 0, 255).astype(np.uint8)


def _take(photos: list[np.ndarray], split: str, size: int, rng, by_rows: bool) -> np.ndarray:
  photo = photos[int(rng.integers(len(photos)))]
  return _crop(photo, split, size, rng) if by_rows else _window(photo, size, rng)


def make_example(
  photos: list[np.ndarray], split: str, index: int, config: SyntheticForgeryConfig
) -> tuple[np.ndarray, np.ndarray, str]:
  """One example: (image uint8 [S,S,3], mask uint8 [S,S,1], manipulation name).

  ``photos``: the split's photos when ``config.photos_from_manual_dir``, else
  every bundled photo (each example then uses only the split's rows of it).
  """
  rng = np.random.default_rng([config.seed, _SPLIT_SEEDS[split], index])
  size = config.image_size
  by_rows = not config.photos_from_manual_dir
  tables = config.varied_jpeg_tables
  if config.misaligned_grid:  # cut the camera JPEG off its 8x8 grid
    dy, dx = rng.integers(0, 8, 2)
    image = _camera(_take(photos, split, size + 8, rng, by_rows), rng, tables)
    image = np.ascontiguousarray(image[dy : dy + size, dx : dx + size])
  else:
    image = _camera(_take(photos, split, size, rng, by_rows), rng, tables)
  balanced = config.balanced_traces
  if balanced and rng.random() < 1 / 3:
    image = _defocus_decoy(image, rng)
  region = np.zeros((size, size), bool)
  manipulation = "authentic"
  if rng.random() >= config.authentic_fraction:
    weights = np.array([MANIPULATION_WEIGHTS[m] for m in config.manipulations], np.float64)
    manipulation = str(rng.choice(config.manipulations, p=weights / weights.sum()))
    anywhere = config.uniform_position
    # Drawn only when set, so configs without it generate what they always did.
    transform = not (config.unwarped_fraction and rng.random() < config.unwarped_fraction)
    if manipulation == "splice":
      donor = _camera(_take(photos, split, size, rng, by_rows), rng, tables)
      donor_region = _region(donor, rng, config.object_region_fraction)
      content, alpha = _warp(donor, donor_region, rng, anywhere, transform)
      if rng.random() < 0.5:
        content = _recolour(content, rng)
      if balanced and rng.random() < 0.5:
        content = _add_noise(content, alpha > 0, rng.uniform(1.5, 6.0), rng)
      image, region = _paste(image, content, alpha, rng)
    elif manipulation == "copymove":
      moved = _region(image, rng, config.object_region_fraction)
      content, alpha = _warp(image, moved, rng, anywhere, transform)
      if balanced and rng.random() < 0.5:
        content = _add_noise(content, alpha > 0, rng.uniform(1.5, 6.0), rng)
      image, region = _paste(image, content, alpha, rng)
    else:
      if anywhere:  # a segment of the photo stays where it is: a blob can go anywhere
        region = _blob_mask(size, rng, anywhere=True)
      else:
        region = _region(image, rng, config.object_region_fraction)
      image = _diffusion_fill(image, region)
      if balanced and rng.random() < 2 / 3:
        image = _add_noise(image, region, _noise_level(image, region) * rng.uniform(0.7, 1.5), rng)
  else:  # global edits only
    image = np.clip(image * rng.uniform(0.9, 1.1, 3) + rng.uniform(-8, 8), 0, 255).astype(np.uint8)
  if rng.random() < 0.75:
    image = _jpeg(image, rng.integers(65, 96), rng if tables else None)
  return image, region.astype(np.uint8)[..., None], manipulation


class SyntheticForgery(tfds.core.GeneratorBasedBuilder):
  """Locally generated image forgeries with exact masks (see the module docstring)."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {
    "1.0.0": "Splice, copy-move and removal from bundled photos.",
    "2.0.0": "Camera JPEG per photo, native-scale windows, object-shaped regions, moved and "
    "recoloured donors, double or no final compression; photos / photos_small from manual_dir; "
    "mixed_small has 2400 training images.",
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Only the photos* configs (photos, photos_small, photos_large, photos_large_unwarped) read "
    "manual_dir: put a folder of your own photographs there (any depth, any format Pillow "
    "reads; JPEG camera photos of mixed sizes work best). Each photo goes to one split by the "
    "SHA-1 of its relative path (80/10/10).\n"
    "  python -m sdpal_jax.datasets.build synthetic_forgery/photos_small --manual_dir MY_PHOTOS"
  )
  BUILDER_CONFIGS = [
    SyntheticForgeryConfig(name="mixed", description="Splice, copy-move and removal."),
    SyntheticForgeryConfig(name="splice", manipulations=("splice",), description="Splicing only."),
    SyntheticForgeryConfig(name="copymove", manipulations=("copymove",), description="Copy-move only."),
    SyntheticForgeryConfig(name="removal", manipulations=("removal",), description="Removal only."),
    SyntheticForgeryConfig(
      name="mixed_small", image_size=128, num_train=2400, num_validation=60, num_test=150,
      description="A quicker mixed set at 128x128.",
    ),
    SyntheticForgeryConfig(
      name="mixed_large", image_size=128, num_train=16000, num_validation=60, num_test=150,
      description="mixed_small with 16000 training images (its validation and test images are "
      "mixed_small's).",
    ),
    SyntheticForgeryConfig(
      name="mixed_small_anywhere", image_size=128, num_train=2400, num_validation=60,
      num_test=150, uniform_position=True,
      description="mixed_small with tampered regions placed anywhere in the frame (no "
      "position prior to learn).",
    ),
    SyntheticForgeryConfig(
      name="mixed_small_balanced", image_size=128, num_train=2400, num_validation=60,
      num_test=150, balanced_traces=True,
      description="mixed_small where smoothness and noise level do not tell tampered pixels "
      "(noised pastes and fills, blurred untouched blobs).",
    ),
    SyntheticForgeryConfig(
      name="mixed_large_unwarped", image_size=128, num_train=16000, num_validation=60,
      num_test=150, unwarped_fraction=0.5,
      description="mixed_large where half the splices and copy-moves are only moved (no "
      "rescaling or rotation), as most of CASIA v1.0's pasted regions are (validation and "
      "test are mixed_small_unwarped's): the packaged default model's data.",
    ),
    SyntheticForgeryConfig(
      name="mixed_large_unwarped_192", image_size=192, num_train=16000, num_validation=60,
      num_test=150, unwarped_fraction=0.5,
      description="mixed_large_unwarped at 192x192: each photo window is downscaled less and "
      "its regions are 1.5 times larger in pixels.",
    ),
    SyntheticForgeryConfig(
      name="mixed_small_unwarped", image_size=128, num_train=2400, num_validation=60,
      num_test=150, unwarped_fraction=0.5,
      description="mixed_small where half the splices and copy-moves are only moved (no "
      "rescaling or rotation), as most of CASIA v1.0's pasted regions are: the quickstart's "
      "data.",
    ),
    SyntheticForgeryConfig(
      name="mixed_large_jpeg", image_size=128, num_train=16000, num_validation=60, num_test=150,
      varied_jpeg_tables=True, misaligned_grid=True,
      description="mixed_large with varied JPEG quantisation tables and the camera's 8x8 grid "
      "shifted against the final save's.",
    ),
    SyntheticForgeryConfig(
      name="mixed_large_unwarped_jpeg", image_size=128, num_train=16000, num_validation=60,
      num_test=150, unwarped_fraction=0.5, varied_jpeg_tables=True, misaligned_grid=True,
      description="mixed_large_unwarped with mixed_large_jpeg's varied JPEG quantisation tables "
      "and shifted camera grid.",
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
    SyntheticForgeryConfig(
      name="photos", photos_from_manual_dir=True, num_train=4000, num_validation=200,
      num_test=400, description="Mixed forgeries at 256x256 from the photos in manual_dir.",
    ),
    SyntheticForgeryConfig(
      name="photos_small", photos_from_manual_dir=True, image_size=128, num_train=2400,
      num_validation=100, num_test=200,
      description="Mixed forgeries at 128x128 from the photos in manual_dir.",
    ),
    SyntheticForgeryConfig(
      name="photos_large", photos_from_manual_dir=True, image_size=128, num_train=16000,
      num_validation=100, num_test=200,
      description="photos_small with mixed_large's 16000 training images: the packaged "
      "model's data, from the photos in manual_dir.",
    ),
    SyntheticForgeryConfig(
      name="photos_large_unwarped", photos_from_manual_dir=True, image_size=128,
      num_train=16000, num_validation=100, num_test=200, unwarped_fraction=0.5,
      description="mixed_large_unwarped (the packaged model's data) from the photos in "
      "manual_dir instead of the 18 bundled ones.",
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
    config = self.builder_config
    counts = {
      "train": config.num_train,
      "validation": config.num_validation,
      "test": config.num_test,
    }
    if not config.photos_from_manual_dir:
      photos = [load_image(p) for p in source_photo_paths()]
      return {split: self._generate_examples(split, n, photos) for split, n in counts.items()}
    by_split = self._manual_photos(dl_manager)
    return {
      split: self._generate_examples(split, counts[split], by_split[split]) for split in counts
    }

  def _manual_photos(self, dl_manager) -> dict[str, list[np.ndarray]]:
    """The photos under manual_dir by split; unreadable or too small ones skipped with a warning."""
    try:
      root = os.fspath(dl_manager.manual_dir)
    except (AssertionError, FileNotFoundError, ValueError) as e:
      raise SdpalError(
        f"{self.name}: manual_dir is not usable ({str(e).splitlines()[0]}).\n"
        f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
      ) from None
    size = self.builder_config.image_size
    by_split: dict[str, list[np.ndarray]] = {split: [] for split in PHOTO_SPLIT_PERCENT}
    paths = folder_photo_paths(root) if os.path.isdir(root) else []
    for path in paths:
      relative = os.path.relpath(path, root)
      try:
        photo = load_image(path)
      except ImageReadError as e:
        logging.warning("%s: skipped %s: %s", self.name, relative, e)
        continue
      if min(photo.shape[:2]) < size:
        logging.warning(
          "%s: skipped %s: %dx%d (WxH) is smaller than the %d-pixel examples",
          self.name, relative, photo.shape[1], photo.shape[0], size,
        )  # fmt: skip
        continue
      by_split[photo_split(relative)].append(photo)
    empty = [split for split, found in by_split.items() if not found]
    if empty:
      raise SdpalError(
        f"{self.name}: {len(paths)} image files under {root}, but no usable photo for the "
        f"{', '.join(empty)} split(s); every split needs photos of at least {size}x{size} "
        f"(each photo goes to one split by its name; give more photos).\n"
        f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
      )
    logging.info(
      "%s: %s photos (train/validation/test) from %s", self.name,
      "/".join(str(len(by_split[s])) for s in PHOTO_SPLIT_PERCENT), root,
    )  # fmt: skip
    return by_split

  def _generate_examples(self, split: str, count: int, photos: list[np.ndarray]):
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
