"""Tampering probability maps from a checkpoint directory, for photos of any size.

``Predictor.from_checkpoint(DIR)`` rebuilds the network and the preprocessing
recorded in ``DIR/config.json`` (see ``sdpal_jax.checkpoint``), and
``predict_probabilities`` turns uint8 photos into per-pixel probabilities at
the photos' own resolution. A directory holding ``ensemble.json`` (see
``sdpal_jax.checkpoint``) loads as an ``EnsemblePredictor``: the mean of its
members' probability maps. ``flip_average`` averages each map with the map of
the left-right mirrored photo (mirrored back), at twice the cost.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from PIL import Image

from sdpal_jax import checkpoint as checkpoint_lib
from sdpal_jax import preprocessing
from sdpal_jax.errors import CheckpointError, SdpalError
from sdpal_jax.models import build_model

# Fixed key for the "sampled" walk so that a prediction is reproducible.
_WALK_KEY_SEED = 0
# Photos larger than this (pixels, each side) are predicted in tiles at full resolution,
# unless the caller or the checkpoint (preprocess.tile_size) says otherwise.
DEFAULT_TILE_SIZE = 2048


def resize_probabilities(prob: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Bilinear resize of a float ``[h, w]`` map to ``size=(H, W)`` (PIL, float32)."""
  h, w = int(size[0]), int(size[1])
  if prob.shape == (h, w):
    return prob.astype(np.float32)
  resized = Image.fromarray(prob.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR)
  return np.clip(np.asarray(resized, np.float32), 0.0, 1.0)


def non_finite_weights(variables: dict[str, Any]) -> tuple[int, int, str | None]:
  """(NaN or infinite values, all values, path of the first array holding one) of ``variables``."""
  bad, total, first = 0, 0, None
  for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
    leaf = np.asarray(leaf)
    total += leaf.size
    if np.issubdtype(leaf.dtype, np.inexact):
      count = int(leaf.size - np.count_nonzero(np.isfinite(leaf)))
      if count and first is None:
        first = "/".join(str(getattr(k, "key", k)) for k in path)
      bad += count
  return bad, total, first


def check_images(images: np.ndarray) -> np.ndarray:
  """``images`` as an array, or SdpalError unless it is uint8 ``[B, H, W, 3]``."""
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise SdpalError(f"expected uint8 images [B, H, W, 3], got shape {images.shape}.")
  if images.dtype != np.uint8:
    raise SdpalError(f"expected uint8 images, got dtype {images.dtype}.")
  return images


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
  """Start offsets of ``tile``-long windows covering ``[0, length)`` with at least ``overlap``."""
  if length <= tile:
    return [0]
  stride = tile - overlap
  starts = list(range(0, length - tile, stride))
  return starts + [length - tile]


def tile_weights(tile: int, overlap: int) -> np.ndarray:
  """``[tile, tile]`` blend weights: 1 inside, falling linearly over ``overlap`` to the borders."""
  ramp = np.ones(tile, np.float32)
  if overlap:
    edge = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
    ramp[:overlap] = edge
    ramp[-overlap:] = edge[::-1]
  return np.outer(ramp, ramp)


@dataclasses.dataclass
class Predictor:
  """Applies an SDPAL model to uint8 photos.

  Attributes:
    model: the Flax module (``sdpal_jax.models.build_model``).
    variables: ``{"params", "batch_stats"}``.
    model_config / preprocess_config: as stored with the checkpoint.
    full_resolution: feed each photo at its own size instead of resizing it to
      ``preprocess_config.image_size`` (the network is fully convolutional
      apart from the graph, whose cost grows with the number of pixels).
    tile_size: with ``full_resolution``, photos larger than this (pixels, each
      side) are cut into overlapping ``tile_size`` squares, each predicted at
      its own resolution and blended back (0: always the whole photo at once).
      Memory then stays that of one tile whatever the photo's size.
    tile_overlap: pixels shared by neighbouring tiles; the blend weights fall
      linearly to the tile borders, where the network sees the least context.
    checkpoint / step: the directory and step the weights came from (None when
      built from variables in memory), named in error messages.
    flip_average: average each map with that of the left-right mirrored photo
      (mirrored back): two network passes per photo.
  """

  model: Any
  variables: dict[str, Any]
  model_config: ml_collections.ConfigDict
  preprocess_config: ml_collections.ConfigDict
  full_resolution: bool = False
  tile_size: int = DEFAULT_TILE_SIZE
  tile_overlap: int | None = None  # None: tile_size // 8
  checkpoint: str | None = None
  step: int | None = None
  flip_average: bool = False

  @classmethod
  def from_checkpoint(
    cls,
    path: str = checkpoint_lib.DEFAULT_MODEL,
    *,
    step: int | None = None,
    full_resolution: bool = False,
    tile_size: int | None = None,
    tile_overlap: int | None = None,
    flip_average: bool = False,
    **model_overrides,
  ) -> Predictor | EnsemblePredictor:
    """Loads ``path`` (a training workdir or a converted checkpoint directory).

    With no ``path`` (or ``"default"``): the model packaged with the library
    (``sdpal_jax.packaged_model``). An ensemble directory (``ensemble.json``)
    gives an ``EnsemblePredictor`` whose members are loaded with these same
    arguments; it has no steps, so ``step`` must be None.

    ``step``: that saved step instead of the best (else latest) one; a step that
    is not saved is a ``CheckpointError`` listing the saved ones. Weights that
    hold NaN or infinite values (a diverged run) are a ``CheckpointError`` too.
    ``model_overrides`` replace model config fields (e.g. ``walk_method="blocked"``
    becomes ``model.walk.method``), useful for large images.

    A checkpoint with ``preprocess.image_size=None`` (trained on crops at the
    photos' own scale) always runs with ``full_resolution``. ``tile_size`` None
    takes the checkpoint's ``preprocess.tile_size``, else ``DEFAULT_TILE_SIZE``.

    With ``full_resolution`` and no ``walk_method`` override, the random walk
    becomes ``"sampled"`` (``model.walk.num_landmarks`` landmark nodes per
    step): identical to the exact walk up to that many graph nodes (256x256
    pixels at output stride 8), and beyond it within ~1% of it at a fraction
    of the cost (``docs/performance.md``: same F1/AUC as the exact walk on the
    synthetic test split, 589x faster than the release at 128x128 nodes).
    """
    if checkpoint_lib.is_ensemble(path):
      if step is not None:
        raise CheckpointError(
          f"{checkpoint_lib.resolve_directory(path)} is an ensemble of checkpoints: it has no "
          f"step {step} to pick (leave --step out)."
        )
      return EnsemblePredictor.from_directory(
        path, full_resolution=full_resolution, tile_size=tile_size, tile_overlap=tile_overlap,
        flip_average=flip_average, **model_overrides,
      )  # fmt: skip
    loaded = checkpoint_lib.load_inference_checkpoint(path, step=step)
    bad, total, first = non_finite_weights(loaded.variables)
    if bad:
      raise CheckpointError(
        f"{loaded.path}: the weights of step {loaded.step} hold {bad} NaN or infinite values "
        f"of {total} (first in {first}): the run diverged before this step was saved; "
        f"pick an earlier one with --step (saved steps: {checkpoint_lib.saved_steps(loaded.path)})."
      )
    model_config = ml_collections.ConfigDict(loaded.model_config.to_dict())
    for key, value in model_overrides.items():
      target, field = model_config, key
      if key.startswith("walk_"):
        target, field = model_config.walk, key[len("walk_") :]
      if field not in target:
        raise SdpalError(f"unknown model override {key!r}.")
      target[field] = value
    # A model trained on crops at the photos' own scale (preprocess.image_size None) is always
    # fed photos at their own size: tiles and the sampled walk keep large photos affordable.
    full_resolution = full_resolution or loaded.preprocess_config.image_size is None
    if full_resolution:
      model_config.output_size = None
      if "walk_method" not in model_overrides:
        model_config.walk.method = "sampled"
    return cls(
      model=build_model(model_config),
      variables=loaded.variables,
      model_config=model_config,
      preprocess_config=loaded.preprocess_config,
      full_resolution=full_resolution,
      tile_size=int(
        tile_size
        if tile_size is not None
        else loaded.preprocess_config.get("tile_size") or DEFAULT_TILE_SIZE
      ),
      tile_overlap=tile_overlap,
      checkpoint=loaded.path,
      step=loaded.step,
      flip_average=flip_average,
    )

  def __post_init__(self):
    if self.tile_overlap is None:
      self.tile_overlap = self.tile_size // 8
    if self.tile_size and not 0 <= self.tile_overlap < self.tile_size // 2:
      raise SdpalError(
        f"tile_overlap={self.tile_overlap} must be >= 0 and below half of tile_size={self.tile_size}."
      )

  @functools.cached_property
  def _apply(self):
    needs_key = self.model_config.walk.method == "sampled"

    def forward(variables, images):
      rngs = {"walk": jax.random.key(_WALK_KEY_SEED)} if needs_key else None
      logits = self.model.apply(variables, images, train=False, rngs=rngs)
      return jax.nn.sigmoid(logits.astype(jnp.float32))

    return jax.jit(forward)

  def set_variables(self, variables: dict[str, Any]) -> None:
    """New weights for the same network (training's validation), without recompiling."""
    self.variables = variables
    self.__dict__.pop("_replicated_variables", None)

  def input_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
    """The (H, W) the network sees for a photo of ``image_size``."""
    if self.full_resolution or self.preprocess_config.image_size is None:
      return int(image_size[0]), int(image_size[1])
    return tuple(int(s) for s in self.preprocess_config.image_size)

  def predict_probabilities(self, images: np.ndarray) -> np.ndarray:
    """uint8 ``[B, H, W, 3]`` -> float32 ``[B, H, W]`` tampering probabilities.

    Images are resized to the checkpoint's input size (PIL bilinear, as the
    release's torchvision Resize), normalised as recorded, and the network's
    probability map is resized back (bilinear) to ``H x W``. With
    ``flip_average``, the mean of that map and the mirrored map of the mirrored
    photos.
    """
    images = check_images(images)
    if not self.flip_average:
      return self._predict(images)
    mirrored = self._predict(np.ascontiguousarray(images[:, :, ::-1]))[:, :, ::-1]
    return (self._predict(images) + mirrored) / 2

  def _predict(self, images: np.ndarray) -> np.ndarray:
    b, h, w, _ = images.shape
    if self.tiles(h, w):
      return np.stack([self._predict_tiled(image) for image in images])
    size = self.input_size((h, w))
    batch = np.stack([preprocessing.resize_image(img, size) for img in images])
    # Inputs below the network's minimum (a thumbnail at full resolution) are mirrored out
    # to it and the map cropped back, so no pixel of the photo is resampled.
    smallest = self.model.smallest_input
    pad_h, pad_w = max(0, smallest - size[0]), max(0, smallest - size[1])
    if pad_h or pad_w:
      batch = np.pad(batch, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="symmetric")
    x = preprocessing.normalize_images(batch, self.preprocess_config.normalization)
    probs = self._forward_sharded(x)[:, : size[0], : size[1]]
    return np.stack([resize_probabilities(p, (h, w)) for p in probs])

  @functools.cached_property
  def _batch_sharding(self):
    devices = jax.local_devices()
    if len(devices) < 2:
      return None
    return NamedSharding(Mesh(np.asarray(devices), ("data",)), PartitionSpec("data"))

  def _forward_sharded(self, x: np.ndarray) -> np.ndarray:
    """Probabilities for a normalised batch, split over all local devices when there are several.

    The batch is padded to a multiple of the device count (the padding is
    dropped from the result); with one device, or fewer images than devices,
    it runs as is.
    """
    sharding = self._batch_sharding
    n = len(x)
    if sharding is None or n < len(sharding.mesh.devices):
      return np.asarray(self._apply(self.variables, jnp.asarray(x)))
    count = len(sharding.mesh.devices)
    padded = np.concatenate([x, np.zeros((-n % count, *x.shape[1:]), x.dtype)])
    probs = self._apply(self._replicated_variables, jax.device_put(padded, sharding))
    return np.asarray(probs)[:n]

  @functools.cached_property
  def _replicated_variables(self):
    replicated = NamedSharding(self._batch_sharding.mesh, PartitionSpec())
    return jax.device_put(self.variables, replicated)

  def tiles(self, height: int, width: int) -> list[tuple[int, int]]:
    """(y, x) top-left corners of the ``tile_size`` squares a ``height x width`` photo is
    predicted in (on the photo padded to at least a tile each side); empty when it goes
    through the network whole (not ``full_resolution``, no tiling, or small enough)."""
    tile = self.tile_size
    if not (self.full_resolution and tile and max(height, width) > tile):
      return []
    rows = tile_starts(max(height, tile), tile, self.tile_overlap)
    return [(y, x) for y in rows for x in tile_starts(max(width, tile), tile, self.tile_overlap)]

  def _predict_tiled(self, image: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> ``[H, W]`` by blending overlapping full-resolution tiles."""
    h, w = image.shape[:2]
    tile = self.tile_size
    padded = np.pad(image, ((0, max(0, tile - h)), (0, max(0, tile - w)), (0, 0)), mode="reflect")
    ph, pw = padded.shape[:2]
    weights = tile_weights(tile, self.tile_overlap)
    total = np.zeros((ph, pw), np.float32)
    norm = np.zeros((ph, pw), np.float32)
    for y, x in self.tiles(h, w):
      crop = padded[y : y + tile, x : x + tile]
      x_in = preprocessing.normalize_images(crop[None], self.preprocess_config.normalization)
      prob = np.asarray(self._apply(self.variables, jnp.asarray(x_in)))[0]
      total[y : y + tile, x : x + tile] += prob * weights
      norm[y : y + tile, x : x + tile] += weights
    return (total / np.maximum(norm, 1e-12))[:h, :w]

  def predict_image(self, image: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> float32 ``[H, W]``."""
    return self.predict_probabilities(np.asarray(image)[None])[0]


@dataclasses.dataclass
class EnsemblePredictor:
  """The mean of several ``Predictor``s' probability maps, one network after the other.

  Each member sees the photos as its own checkpoint says; they must share the
  preprocessing (input size and normalisation) so that the maps are of the same
  photos seen the same way. Two networks trained on different photos rank a
  real photo's pixels differently enough that their mean ranks them better
  than either (docs/results/real_data).

  Attributes:
    members: the member predictors, in ``ensemble.json``'s order.
    checkpoint: the ensemble directory (None when built in memory).
  """

  members: list[Predictor]
  checkpoint: str | None = None
  step: None = None  # an ensemble has no training step; kept for messages naming one

  def __post_init__(self):
    if not self.members:
      raise SdpalError("an ensemble needs at least one member.")
    first = self.members[0].preprocess_config.to_dict()
    for member in self.members[1:]:
      if member.preprocess_config.to_dict() != first:
        raise CheckpointError(
          f"{self.checkpoint or 'ensemble'}: member {member.checkpoint} preprocesses photos as "
          f"{member.preprocess_config.to_dict()}, the first member as {first}: the maps would "
          "not be of the same input."
        )

  @classmethod
  def from_directory(cls, path: str, **member_options) -> EnsemblePredictor:
    """Loads every member of the ensemble directory ``path`` (``Predictor.from_checkpoint`` options)."""
    directory = checkpoint_lib.resolve_directory(path)
    members = [
      Predictor.from_checkpoint(member, **member_options)
      for member in checkpoint_lib.ensemble_members(directory)
    ]
    return cls(members=members, checkpoint=directory)

  @property
  def preprocess_config(self) -> ml_collections.ConfigDict:
    return self.members[0].preprocess_config

  @property
  def full_resolution(self) -> bool:
    return self.members[0].full_resolution

  @property
  def tile_size(self) -> int:
    return self.members[0].tile_size

  @property
  def flip_average(self) -> bool:
    return all(member.flip_average for member in self.members)

  def input_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
    """The (H, W) the networks see for a photo of ``image_size``."""
    return self.members[0].input_size(image_size)

  def predict_probabilities(self, images: np.ndarray) -> np.ndarray:
    """uint8 ``[B, H, W, 3]`` -> float32 ``[B, H, W]``: the members' mean probability."""
    images = check_images(images)
    total = self.members[0].predict_probabilities(images)
    for member in self.members[1:]:
      total = total + member.predict_probabilities(images)
    return (total / len(self.members)).astype(np.float32)

  def predict_image(self, image: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> float32 ``[H, W]``."""
    return self.predict_probabilities(np.asarray(image)[None])[0]
