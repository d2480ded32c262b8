"""The evaluator: one dataset, one protocol setting, scored for any predictor.

Training's validation (``sdpal_jax.train``, from ``config.evals``) and the
evaluation command (``python -m sdpal_jax.evaluate``) both score through
``Evaluator.run``, so the number that picked a run's ``best/`` checkpoint is
the number ``evaluate`` prints for that checkpoint on the same split.
(big_vision's evaluators have the same shape: built from a config, ``run``
returns metrics.)

An item that cannot be scored (unreadable file, missing or mis-sized mask) is
skipped and named in the result's ``skipped`` list; a split in which nothing
could be scored raises ``EvaluationError`` instead of returning the
degenerate-split conventions of ``sdpal_jax.metrics`` as if they were
measurements.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from collections.abc import Iterable
from typing import Any, Protocol

import ml_collections
import numpy as np
import tqdm

from sdpal_jax import metrics as metrics_lib
from sdpal_jax import perturbations as perturbations_lib
from sdpal_jax import preprocessing
from sdpal_jax.datasets.sources import dataset_spec, open_source
from sdpal_jax.errors import ConfigError, SdpalError

PROTOCOL_CHOICES = ("dataset", "image", "best", "all")
RESOLUTIONS = ("native", "release")


class EvaluationError(SdpalError):
  """A dataset that could not be scored at all."""


class PredictorLike(Protocol):
  """What evaluation needs from ``sdpal_jax.inference.Predictor``."""

  preprocess_config: Any

  def predict_probabilities(self, images: np.ndarray) -> np.ndarray:
    """uint8 ``[B, H, W, 3]`` -> float32 ``[B, H, W]``."""


@dataclasses.dataclass
class _Example:
  name: str
  image: np.ndarray
  mask: np.ndarray
  tampered: bool


def validate_scoring_options(
  *,
  protocol: str,
  resolution: str,
  batch_size: int,
  threshold: float,
  image_score: str,
  flag_prefix: str = "",
) -> None:
  """Raises ConfigError naming the first invalid option (``flag_prefix + name``: "--" for flags)."""

  def bad(name: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"{flag_prefix}{name}={value!r}; {expected}.")

  if protocol not in PROTOCOL_CHOICES:
    raise bad("protocol", protocol, f"expected one of {', '.join(PROTOCOL_CHOICES)}")
  if resolution not in RESOLUTIONS:
    raise bad("resolution", resolution, f"expected one of {', '.join(RESOLUTIONS)}")
  if batch_size < 1:
    raise bad("batch_size", batch_size, "must be at least 1")
  if not 0.0 <= float(threshold) < 1.0:
    raise bad("threshold", threshold, "must be in [0, 1)")
  try:
    metrics_lib.image_score_fn(image_score, threshold)
  except ValueError as e:
    raise ConfigError(f"{flag_prefix}image_score: {e}") from None


def check_item(item: dict[str, Any]) -> str | None:
  """Why an item cannot be scored, or None."""
  image, mask = np.asarray(item.get("image")), np.asarray(item.get("mask"))
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    return f"image is {image.dtype} {image.shape}, expected uint8 [H, W, 3]"
  if mask.shape != image.shape[:2]:
    return f"mask shape {mask.shape} differs from image size {image.shape[:2]}"
  return None


class _Accumulation:
  """Accumulators, timing and bookkeeping of one ``Evaluator.run``."""

  def __init__(
    self,
    protocols,
    histogram_bins,
    want_curves,
    num_examples,
    *,
    threshold=metrics_lib.THRESHOLD,
    image_score=metrics_lib.DEFAULT_IMAGE_SCORE,
    per_image=False,
    name="",
  ):
    self.name = name
    options = {"histogram_bins": histogram_bins, "threshold": threshold, "image_score": image_score}
    self.accumulators = {p: metrics_lib.make_accumulator(p, **options) for p in protocols}
    self.curves = None
    if want_curves:
      pooled = [a for p, a in self.accumulators.items() if p != "image"]
      self.curves = pooled[0] if pooled else metrics_lib.DatasetMetrics(**options)
      if not pooled:
        self.accumulators["_curves"] = self.curves
    self.num_examples = num_examples
    self.examples: list[dict[str, np.ndarray]] = []
    self.skipped: list[dict[str, str]] = []
    self.model_seconds = 0.0
    self.metrics_seconds = 0.0
    self.num_scored = 0
    self.threshold = threshold
    self.image_score = image_score
    self.per_image: list[dict[str, Any]] | None = [] if per_image else None

  def score(self, predictor: PredictorLike, batch: list[_Example]) -> None:
    if not batch:
      return
    start = time.perf_counter()
    probs = np.asarray(predictor.predict_probabilities(np.stack([e.image for e in batch])))
    self.model_seconds += time.perf_counter() - start
    for example, prob in zip(batch, probs, strict=True):
      try:
        metrics_lib.require_finite(prob, "predicted probabilities")
      except metrics_lib.NonFiniteScoresError as e:
        raise EvaluationError(f"{self.name}: {example.name}: {e}") from None
    start = time.perf_counter()
    for example, prob in zip(batch, probs, strict=True):
      for accumulator in self.accumulators.values():
        accumulator.update(prob, example.mask, tampered=example.tampered)
      if self.per_image is not None:
        record = metrics_lib.per_image_record(
          prob, example.mask, threshold=self.threshold, image_score=self.image_score
        )
        score = record.pop("image_score")
        self.per_image.append(
          {
            "name": example.name,
            "tampered": example.tampered,
            "image_score": score,
            "image_prediction": score > self.threshold,
            **record,
            "height": int(example.mask.shape[0]),
            "width": int(example.mask.shape[1]),
          }
        )
    self.metrics_seconds += time.perf_counter() - start
    self.num_scored += len(batch)
    for example, prob in zip(batch, probs, strict=True):
      if len(self.examples) < self.num_examples:
        self.examples.append(
          {"name": example.name, "image": example.image, "mask": example.mask, "probs": prob}
        )

  def result(self, primary: str, name: str) -> dict[str, Any]:
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      by_protocol = {p: a.result() for p, a in self.accumulators.items() if not p.startswith("_")}
    messages = list(dict.fromkeys(str(w.message) for w in caught))
    for message in messages:
      warnings.warn(f"{name}: {message}", metrics_lib.MetricWarning, stacklevel=4)
    result = dict(by_protocol[primary])
    if len(by_protocol) > 1:
      result["protocols"] = by_protocol
    result["num_scored"] = self.num_scored
    result["num_skipped"] = len(self.skipped)
    result["skipped"] = self.skipped
    result["warnings"] = messages
    result["timing"] = {
      "model_seconds": self.model_seconds,
      "metrics_seconds": self.metrics_seconds,
      "images": self.num_scored,
    }
    return result


class Evaluator:
  """Scores predictors on one dataset.

  Args:
    dataset: a dataset SPEC (tfds ``name[:split]``, ``.lst``, ``.json``, ``Tp/``+``Gt/``
      folder; see ``sdpal_jax.datasets.sources``), ``(name, SPEC)`` to report a
      SPEC under another name (an entry of IMDL-BenCo's ``test_datasets.json``),
      or ``(name, items)`` where ``items`` is a re-iterable of
      ``{"image", "mask", "tampered", "name"}`` dicts.
    protocol: ``dataset`` | ``image`` | ``best`` | ``all`` (``sdpal_jax.metrics``);
      with ``all`` the result holds the ``dataset`` numbers and every protocol's
      under ``"protocols"``.
    resolution: ``native`` scores each photo at its own size (the predictor
      resizes its output back); ``release`` resizes photo and mask to the
      predictor's ``preprocess.image_size`` first (the SDPAL release scores
      256x256 maps against masks resized with bilinear + ``> 128``).
    perturbation: applied to every photo before prediction (robustness).
    batch_size: images per model call (consecutive images of equal size).
    max_examples: score at most this many items (None: all).
    histogram_bins: None for the exact pooled AUC, else the fixed-memory histogram.
    num_examples: keep this many (image, mask, probability) examples of each run.
    want_curves: keep the pooled count tables (for ROC / PR figures).
    cache: hold the decoded items in memory after the first pass (training's
      repeated validation); otherwise the source is read again on each run.
    data_dir: the tfds data directory for tfds SPECs (None: tfds' default).
    progress: show a progress bar.
    threshold: a pixel (and an image, by its score) is called tampered iff its
      probability (score) is greater than this.
    image_score: the image-level score rule (``sdpal_jax.metrics.image_score_fn``:
      ``top1``, ``topP``, ``max``, ``mean``, ``area``).
    per_image: keep one row of numbers per scored image (``per_image`` after
      ``run``; ``sdpal_jax.metrics.per_image_record``).
  """

  def __init__(
    self,
    dataset: str | tuple[str, Iterable[dict[str, Any]]],
    *,
    protocol: str = "dataset",
    resolution: str = "native",
    perturbation: perturbations_lib.Perturbation | None = None,
    batch_size: int = 1,
    max_examples: int | None = None,
    histogram_bins: int | None = None,
    num_examples: int = 0,
    want_curves: bool = False,
    cache: bool = False,
    data_dir: str | None = None,
    progress: bool = False,
    threshold: float = metrics_lib.THRESHOLD,
    image_score: str = metrics_lib.DEFAULT_IMAGE_SCORE,
    per_image: bool = False,
  ):
    validate_scoring_options(
      protocol=protocol,
      resolution=resolution,
      batch_size=batch_size,
      threshold=threshold,
      image_score=image_score,
    )
    self._spec: str | None = None
    if isinstance(dataset, str):
      self.name, self._spec, self._source = dataset, dataset, None
    elif isinstance(dataset[1], str):
      self.name, self._spec, self._source = str(dataset[0]), dataset[1], None
    else:
      self.name, self._source = str(dataset[0]), dataset[1]
    self.threshold = float(threshold)
    self.image_score = image_score
    self.per_image_wanted = per_image
    self.per_image: list[dict[str, Any]] = []  # of the last run, with per_image
    self.protocols = list(metrics_lib.PROTOCOLS) if protocol == "all" else [protocol]
    self.resolution = resolution
    self.perturbation = perturbation
    self.batch_size = batch_size
    self.max_examples = max_examples or None
    self.histogram_bins = histogram_bins
    self.num_examples = num_examples
    self.want_curves = want_curves
    self.cache = cache
    self.data_dir = data_dir
    self.progress = progress
    self._cached: tuple[list[dict[str, Any]], list[dict[str, str]]] | None = None
    self._notes: list[str] = []
    self.examples: list[dict[str, np.ndarray]] = []  # of the last run
    self.curves: metrics_lib._Accumulator | None = None  # of the last run

  @classmethod
  def from_config(
    cls,
    eval_config: ml_collections.ConfigDict,
    *,
    data_config: ml_collections.ConfigDict,
    batch_size: int,
    **kwargs,
  ) -> Evaluator:
    """One ``config.evals`` entry; an empty ``dataset`` means ``data.dataset``'s ``data.eval_split``."""
    dataset = eval_config.get("dataset") or dataset_spec(
      data_config.dataset, data_config.eval_split
    )
    kwargs.setdefault("data_dir", data_config.get("data_dir"))
    kwargs.setdefault("threshold", float(eval_config.get("threshold", metrics_lib.THRESHOLD)))
    kwargs.setdefault(
      "image_score", eval_config.get("image_score", metrics_lib.DEFAULT_IMAGE_SCORE)
    )
    return cls(
      dataset,
      protocol=eval_config.get("protocol", "dataset"),
      resolution=eval_config.get("resolution", "native"),
      batch_size=int(eval_config.get("batch_size") or batch_size),
      max_examples=int(eval_config.get("max_examples") or 0) or None,
      **kwargs,
    )

  def _items(self) -> tuple[Iterable[dict[str, Any]], list[dict[str, str]] | None]:
    """(items, skipped-by-the-source or None when the source reports them itself)."""
    if self._cached is not None:
      return self._cached
    source = (
      self._source if self._source is not None else open_source(self._spec, data_dir=self.data_dir)
    )
    if not self.cache:
      return source, None
    items = []
    for item in source:
      items.append(item)
      if self.max_examples and len(items) >= self.max_examples:
        break
    skipped = [
      {"path": str(path), "reason": str(reason)} for path, reason in getattr(source, "skipped", [])
    ]
    self._notes = list(getattr(source, "notes", []))
    self._cached = (items, skipped)
    return self._cached

  def prepare(self) -> None:
    """Reads (and with ``cache``, holds) the dataset now: a missing or empty one fails here."""
    items, _ = self._items()
    if self.cache and not items:
      raise EvaluationError(f"{self.name}: the dataset has no items to evaluate.")

  def run(self, predictor: PredictorLike) -> dict[str, Any]:
    """Metrics of ``predictor`` on the dataset (fractions in [0, 1]; see the module doc)."""
    state = _Accumulation(
      self.protocols,
      self.histogram_bins,
      self.want_curves,
      self.num_examples,
      threshold=self.threshold,
      image_score=self.image_score,
      per_image=self.per_image_wanted,
      name=self.name + (f" [{self.perturbation.name}]" if self.perturbation is not None else ""),
    )
    items, source_skipped = self._items()
    notes = self._notes if self._cached is not None else list(getattr(items, "notes", []))
    release_size = None
    if self.resolution == "release":
      release_size = predictor.preprocess_config.image_size
      if release_size is None:
        raise ConfigError(
          "--resolution=release needs the checkpoint's preprocess.image_size; it is None "
          "(the model was trained at native resolution): use --resolution=native."
        )
    total = None
    try:
      total = len(items)  # type: ignore[arg-type]
    except TypeError:
      pass
    if self.max_examples:
      total = min(total, self.max_examples) if total is not None else self.max_examples
    suffix = f" [{self.perturbation.name}]" if self.perturbation is not None else ""
    batch: list[_Example] = []
    seen = 0
    for item in tqdm.tqdm(
      items, total=total, desc=self.name + suffix, disable=not self.progress, leave=False
    ):
      if self.max_examples and seen >= self.max_examples:
        break
      seen += 1
      name = str(item.get("name", f"item{seen}"))
      problem = check_item(item)
      if problem:
        state.skipped.append({"path": name, "reason": problem})
        continue
      image = np.asarray(item["image"])
      mask = (np.asarray(item["mask"]) > 0).astype(np.uint8)
      tampered = bool(item.get("tampered", mask.any()))
      if self.perturbation is not None:
        image = self.perturbation(image, key=name)
      if release_size is not None:
        image = preprocessing.resize_image(image, release_size)
        mask = preprocessing.resize_mask(mask, release_size)
      if batch and (len(batch) >= self.batch_size or batch[0].image.shape != image.shape):
        state.score(predictor, batch)
        batch = []
      batch.append(_Example(name, image, mask, tampered))
    state.score(predictor, batch)
    if source_skipped is None:
      source_skipped = [
        {"path": str(path), "reason": str(reason)} for path, reason in getattr(items, "skipped", [])
      ]
    state.skipped += source_skipped
    if state.num_scored == 0:
      listed = "; ".join(f"{s['path']}: {s['reason']}" for s in state.skipped[:5])
      more = f" (and {len(state.skipped) - 5} more)" if len(state.skipped) > 5 else ""
      raise EvaluationError(
        f"{self.name}{suffix}: no image could be scored, so no metric is reported; "
        + (f"{len(state.skipped)} skipped: {listed}{more}." if state.skipped else "it is empty.")
      )
    if state.skipped:
      logging.warning(
        "%s%s: scored %d images, skipped %d (listed in results.json under 'skipped').",
        self.name,
        suffix,
        state.num_scored,
        len(state.skipped),
      )
    self.examples, self.curves = state.examples, state.curves
    self.per_image = state.per_image or []
    result = state.result(self.protocols[0], self.name + suffix)
    if notes:
      result["notes"] = notes
    return result
