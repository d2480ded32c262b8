"""Robustness perturbations applied to uint8 photos before prediction.

The robustness protocol of IMDL-BenCo (Ma et al., NeurIPS 2024 D&B;
``IMDLBenCo/transforms/robustness_wrapper.py``) degrades every test image with
one of Gaussian blur, Gaussian noise or JPEG compression at a list of
strengths and re-evaluates; the ground-truth mask is left untouched. We follow
it with explicit parameters (IMDL-BenCo passes albumentations' parameters):

- ``jpeg:Q`` — re-encode at quality Q (IMDL-BenCo draws the quality from
  [Q-1, Q]; we use exactly Q so runs are reproducible).
- ``blur:SIGMA`` — Gaussian blur with standard deviation SIGMA pixels.
  IMDL-BenCo's parameter is the kernel size k, for which OpenCV picks
  sigma = 0.3 * ((k - 1) / 2 - 1) + 0.8 (k = 3, 7, 11, 15 -> 0.8, 1.4, 2.0, 2.6).
- ``noise:STD`` — additive Gaussian noise of standard deviation STD in 0..255
  units, then rounding and clipping. IMDL-BenCo's parameter is the variance
  (``var_limit``), i.e. STD**2. The noise is seeded per image (from its key,
  e.g. the file name) so that a rerun gives the same numbers.
- ``resize:SCALE`` — bilinear downscale by SCALE then back up to the original
  size (common in social-network robustness studies; not in IMDL-BenCo).

IMDL-BenCo's own parameters are accepted too and converted by the rules above:

- ``blur_k:K`` — blur with IMDL-BenCo's kernel size K (odd), i.e.
  ``blur:SIGMA`` with SIGMA = 0.3 * ((K - 1) / 2 - 1) + 0.8: albumentations
  1.3.0 (IMDL-BenCo's pinned version, ``requirements.txt``) passes sigma 0 to
  ``cv2.GaussianBlur``, which derives sigma from the kernel size by that rule
  (``albumentations/augmentations/blur/transforms.py``, ``GaussianBlur``).
  The sigma is the same; the kernel is not cut at the same place (OpenCV:
  radius (K - 1) / 2; ours: floor(3 SIGMA + 0.5), one pixel wider for K < 23)
  and OpenCV reflects borders without repeating the edge pixel (``dcb|abcd``,
  ours ``cba|abcd``), so the pixels differ slightly, mostly at the borders.
- ``noise_var:V`` — IMDL-BenCo's ``var_limit=(V, V)``: albumentations draws
  N(0, V) noise, standard deviation sqrt(V) in 0..255 units, per channel
  (``GaussNoise`` in ``albumentations/augmentations/transforms.py``), i.e.
  ``noise:sqrt(V)``. albumentations truncates to uint8 after clipping; we round.
- ``benco`` — IMDL-BenCo's whole robustness grid (``BENCO_GRID``), the lists
  in ``IMDLBenCo/training_scripts/test_robust.py``: ``blur_k:3,7,11,15,19,23``
  (its 0 is the clean run), ``noise_var:3,7,11,15,19,23`` and
  ``jpeg:50,60,70,80,90,100`` (it draws the quality from [Q-1, Q]; we use Q).

A perturbation given by IMDL-BenCo's parameter keeps that name in the results
(``blur_k:3``, ``noise_var:7``) and its kind (``blur``, ``noise``) for the
robustness tables.

JPEG, blur and noise are the training augmentations' own ops
(``sdpal_jax.augment.jpeg`` / ``gaussian_blur`` / ``gaussian_noise``: libjpeg
at quality Q with 4:2:0 subsampling; a sampled Gaussian kernel of radius
``floor(3 sigma + 0.5)`` with symmetric-reflection borders), run eagerly here,
so ``blur:1`` in an evaluation is pixel for pixel the blur a training run with
sigma 1 applied. TensorFlow is imported on first use, not with this module.

Every function maps uint8 ``[H, W, 3]`` to uint8 ``[H, W, 3]`` of the same size.
"""

from __future__ import annotations

import dataclasses
import math
import zlib

import numpy as np
from PIL import Image

from sdpal_jax.errors import ConfigError


def _eager(op, image: np.ndarray, *args) -> np.ndarray:
  """Runs an ``sdpal_jax.augment`` op on a NumPy photo (TensorFlow, eagerly)."""
  import tensorflow as tf  # noqa: PLC0415 (TensorFlow only once a perturbation runs)

  return op(tf.convert_to_tensor(np.asarray(image, np.uint8)), *args).numpy()


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
  """Re-encodes ``image`` as JPEG at ``quality`` (1..100; ``augment.jpeg``)."""
  from sdpal_jax import augment  # noqa: PLC0415 (TensorFlow: only once a perturbation runs)

  quality = int(quality)
  if not 1 <= quality <= 100:
    raise ConfigError(f"jpeg quality {quality} is outside 1..100.")
  return _eager(augment.jpeg, image, quality)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
  """Gaussian blur with standard deviation ``sigma`` pixels (``augment.gaussian_blur``)."""
  from sdpal_jax import augment  # noqa: PLC0415 (TensorFlow: only once a perturbation runs)

  if sigma < 0:
    raise ConfigError(f"blur sigma {sigma} is negative.")
  if sigma == 0:
    return np.asarray(image, np.uint8)
  return _eager(augment.gaussian_blur, image, float(sigma))


def noise_seed(seed: int) -> np.ndarray:
  """The ``augment`` stateless seed ``[seed, 0]`` (int64) behind ``gaussian_noise(..., seed)``."""
  return np.array([int(seed), 0], np.int64)


def gaussian_noise(image: np.ndarray, std: float, seed: int = 0) -> np.ndarray:
  """Adds N(0, std^2) noise (0..255 units), rounds and clips (``augment.gaussian_noise``)."""
  from sdpal_jax import augment  # noqa: PLC0415 (TensorFlow: only once a perturbation runs)

  if std < 0:
    raise ConfigError(f"noise std {std} is negative.")
  return _eager(augment.gaussian_noise, image, noise_seed(seed), float(std))


def resize(image: np.ndarray, scale: float) -> np.ndarray:
  """Bilinear resize by ``scale`` then back to the original size."""
  if not 0 < scale <= 4:
    raise ConfigError(f"resize scale {scale} is outside (0, 4].")
  h, w = np.shape(image)[:2]
  small = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
  pil = Image.fromarray(np.asarray(image, np.uint8))
  return np.asarray(pil.resize(small, Image.BILINEAR).resize((w, h), Image.BILINEAR))


def _number_text(value: float) -> str:
  return str(int(value)) if float(value).is_integer() else str(value)


def blur_sigma_from_kernel(kernel_size: float) -> float:
  """OpenCV's sigma for a Gaussian kernel of odd size K: 0.3 * ((K - 1) / 2 - 1) + 0.8."""
  k = float(kernel_size)
  if k < 3 or not k.is_integer() or int(k) % 2 != 1:
    raise ConfigError(f"blur kernel size {kernel_size}: must be an odd integer >= 3.")
  return 0.3 * ((k - 1) * 0.5 - 1) + 0.8


@dataclasses.dataclass(frozen=True)
class Perturbation:
  """One degradation: ``kind`` in {jpeg, blur, noise, resize} at strength ``value``.

  ``label``: the name to report instead of ``kind:value`` (IMDL-BenCo's
  parameter, e.g. ``blur_k:3`` for ``blur:0.8``).
  """

  kind: str
  value: float
  label: str = ""

  @property
  def name(self) -> str:
    """``kind:value`` as written on the command line (e.g. ``jpeg:50``), or the label."""
    return self.label or f"{self.kind}:{_number_text(self.value)}"

  def __call__(self, image: np.ndarray, key: str = "") -> np.ndarray:
    """Applies it; ``key`` (e.g. the image name) seeds the noise."""
    if self.kind == "jpeg":
      return jpeg(image, int(self.value))
    if self.kind == "blur":
      return gaussian_blur(image, self.value)
    if self.kind == "noise":
      return gaussian_noise(image, self.value, seed=zlib.crc32(key.encode()))
    if self.kind == "resize":
      return resize(image, self.value)
    raise ConfigError(f"unknown perturbation kind {self.kind!r}.")


KINDS = ("jpeg", "blur", "noise", "resize")
# IMDL-BenCo's parameters -> (our kind, conversion to our value).
BENCO_KINDS = {
  "blur_k": ("blur", blur_sigma_from_kernel),
  "noise_var": ("noise", math.sqrt),
}
# IMDLBenCo/training_scripts/test_robust.py's robustness_list (without its clean 0).
BENCO_GRID = "blur_k:3,7,11,15,19,23 noise_var:3,7,11,15,19,23 jpeg:50,60,70,80,90,100"
PRESETS = {"benco": BENCO_GRID}


def is_perturbation_token(text: str) -> bool:
  """True for ``KIND:...`` with a known kind, or a preset name (command-line parsing)."""
  return text in PRESETS or text.split(":")[0] in (*KINDS, *BENCO_KINDS)


def parse_perturbations(specs) -> list[Perturbation]:
  """``["jpeg:50,70,90", "blur:1,2", "blur_k:3", "benco"]`` (or one spaced string) -> perturbations."""
  if isinstance(specs, str):
    specs = [specs]
  parsed = []
  for spec in specs:
    for token in str(spec).split():
      if token in PRESETS:
        parsed += parse_perturbations(PRESETS[token])
        continue
      kind, sep, values = token.partition(":")
      if not sep or kind not in (*KINDS, *BENCO_KINDS) or not values:
        raise ConfigError(
          f"perturbation {token!r}: expected KIND:V1[,V2...] with KIND one of "
          f"{', '.join((*KINDS, *BENCO_KINDS))}, or a preset ({', '.join(PRESETS)}) "
          "(e.g. jpeg:50,70,90 blur:1,2,3 noise:3,7 resize:0.5,0.75 blur_k:3,7 noise_var:3,7)."
        )
      for value in values.split(","):
        try:
          number = float(value)
        except ValueError:
          raise ConfigError(f"perturbation {token!r}: {value!r} is not a number.") from None
        if kind in BENCO_KINDS:
          our_kind, convert = BENCO_KINDS[kind]
          if number < 0:
            raise ConfigError(f"perturbation {token!r}: {value!r} is negative.")
          label = f"{kind}:{_number_text(number)}"
          parsed.append(Perturbation(our_kind, convert(number), label=label))
        else:
          parsed.append(Perturbation(kind, number))
  return parsed
