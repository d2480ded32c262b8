"""Reading photos and masks whatever their format: one place for every odd case.

Photos: EXIF orientation applied (``ImageOps.exif_transpose``), then any PIL
mode converted to 8-bit RGB: greyscale (L, 1), palette (P, with or without
transparency), alpha (LA, RGBA, PA: the alpha channel is dropped, not
composited: forgery traces live in the colour values), CMYK and YCbCr (PIL's
conversions), 16/32-bit integer (I;16*, I: scaled by the type's maximum to
0..255) and float (F: values in [0, 1] scaled by 255, otherwise by the image
maximum). Multi-frame files: the first frame.

Masks: the same decoding, then a pixel is tampered where any channel is above
127 (binary 0/1 masks are stretched to 0/255 first; colour-coded masks count
every non-dark colour). ``inverted=True`` flips that for datasets that draw
the tampered region black (NIST16).
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sdpal_jax.errors import ImageReadError

SIZE_POLICIES = ("resize", "error")

# File names taken for photos (and masks) wherever a folder is listed:
# ``predict``, the dataset builders and the evaluation sources. Compare the
# lower-cased name: ``name.lower().endswith(IMAGE_EXTENSIONS)``. These are the
# raster formats the decoding above reads with Pillow's bundled codecs: JPEG,
# PNG, TIFF, BMP, WebP, GIF, the Netpbm family, TGA, JPEG 2000 and AVIF
# (tests/test_predict.py round-trips each). Pillow's other formats are left
# out: vector or page formats needing Ghostscript (EPS/PS), Windows-only
# metafiles (WMF/EMF), identify-only stubs (HDF5, GRIB, BUFR), layered PSD,
# icons and cursors. The first six are the datasets' own; a builder looking for
# ``NAME`` + extension tries them in this order.
IMAGE_EXTENSIONS = (
  ".jpg",
  ".jpeg",
  ".png",
  ".tif",
  ".tiff",
  ".bmp",
  ".jpe",
  ".jfif",
  ".dib",
  ".webp",
  ".gif",
  ".ppm",
  ".pgm",
  ".pbm",
  ".pnm",
  ".tga",
  ".jp2",
  ".j2k",
  ".avif",
)


def _open(source, name: str) -> Image.Image:
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      image = Image.open(source)
      image.load()  # PIL is lazy: force decoding so truncation is caught here.
      image = ImageOps.exif_transpose(image)
  except FileNotFoundError as e:
    raise ImageReadError(name, "no such file") from e
  except UnidentifiedImageError as e:
    raise ImageReadError(
      name, "not an image PIL can identify (corrupt or unsupported format)"
    ) from e
  except (OSError, SyntaxError, ValueError) as e:
    raise ImageReadError(name, f"cannot decode image ({e})") from e
  if image.width == 0 or image.height == 0:
    raise ImageReadError(name, "image has zero size")
  return image


def _to_uint8_array(image: Image.Image) -> np.ndarray:
  """Any PIL image -> uint8 ``[H, W]`` or ``[H, W, C]`` with 0..255 values."""
  mode = image.mode
  if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
    array = np.asarray(image)
    if mode == "I":
      top = 65535 if array.max(initial=0) <= 65535 else 2**32 - 1
    else:
      top = 65535
    return np.clip(array.astype(np.float64) * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)
  if mode == "F":
    array = np.asarray(image, np.float64)
    peak = 1.0 if array.max(initial=0) <= 1.0 else array.max()
    return np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
  if mode == "P":
    image = image.convert("RGBA" if "transparency" in image.info else "RGB")
  elif mode == "PA":
    image = image.convert("RGBA")
  elif mode not in ("L", "RGB", "RGBA", "LA"):
    image = image.convert("RGB")  # 1, CMYK, YCbCr, LAB, HSV, ...
  return np.asarray(image, np.uint8)


def _decode_rgb(image: Image.Image, name: str) -> np.ndarray:
  try:
    array = _to_uint8_array(image)
  except (OSError, ValueError) as e:
    raise ImageReadError(name, f"cannot convert mode {image.mode} to RGB ({e})") from e
  if array.ndim == 2:
    array = np.repeat(array[..., None], 3, axis=-1)
  elif array.shape[-1] == 2:  # LA
    array = np.repeat(array[..., :1], 3, axis=-1)
  elif array.shape[-1] == 4:  # RGBA
    array = array[..., :3]
  return np.ascontiguousarray(array)


def load_image(path: str | os.PathLike) -> np.ndarray:
  """A photo as uint8 ``[H, W, 3]`` (see the module doc); ImageReadError names the file."""
  name = os.fspath(path)
  if os.path.isfile(name) and os.path.getsize(name) == 0:
    raise ImageReadError(name, "file is empty")
  return _decode_rgb(_open(name, name), name)


def decode_image_bytes(data: bytes, name: str) -> np.ndarray:
  """As ``load_image`` for encoded bytes; ``name`` is used in error messages."""
  if not data:
    raise ImageReadError(name, "file is empty")
  return _decode_rgb(_open(io.BytesIO(data), name), name)


def mask_from_array(
  array: np.ndarray,
  *,
  name: str = "mask",
  image_size: tuple[int, int] | None = None,
  inverted: bool = False,
  size_policy: str = "resize",
) -> np.ndarray:
  """uint8 mask pixels ``[H, W]`` or ``[H, W, C]`` -> {0, 1} uint8 ``[H, W]`` (see module doc)."""
  if size_policy not in SIZE_POLICIES:
    raise ValueError(f"size_policy={size_policy!r}; expected one of {SIZE_POLICIES}")
  array = np.asarray(array)
  if array.ndim == 3:
    channels = array[..., :3] if array.shape[-1] in (3, 4) else array[..., :1]
    array = channels.max(axis=-1)
  if array.size and array.max() == 1:  # 0/1 masks
    array = array * 255
  mask = (array > 127).astype(np.uint8)
  if inverted:
    mask = 1 - mask
  if image_size is not None and mask.shape != tuple(image_size):
    if size_policy == "error":
      raise ImageReadError(
        name,
        f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {image_size[1]}x{image_size[0]}",
      )
    resized = Image.fromarray(mask * 255).resize((image_size[1], image_size[0]), Image.NEAREST)
    mask = (np.asarray(resized) > 127).astype(np.uint8)
  return mask


def load_mask(
  path: str | os.PathLike,
  *,
  image_size: tuple[int, int] | None = None,
  inverted: bool = False,
  size_policy: str = "resize",
) -> np.ndarray:
  """A ground-truth mask as {0, 1} uint8 ``[H, W]``.

  Args:
    path: the mask file.
    image_size: (H, W) of the photo it belongs to; a mask of another size is
      resized with nearest neighbour (``size_policy="resize"``) or rejected
      with ImageReadError (``"error"``).
    inverted: the dataset draws tampered pixels black.
  """
  name = os.fspath(path)
  if os.path.isfile(name) and os.path.getsize(name) == 0:
    raise ImageReadError(name, "mask file is empty")
  array = _to_uint8_array(_open(name, name))
  return mask_from_array(
    array, name=name, image_size=image_size, inverted=inverted, size_policy=size_policy
  )
