"""Evaluates checkpoints on forgery datasets and writes F1/AUC tables.

  python -m sdpal_jax.evaluate --workdir DIR[,DIR...] [--labels A,B] \\
      --datasets SPEC[,SPEC...] [--protocol dataset|image|best|all] \\
      [--resolution native|release] [--output_dir OUT] \\
      [--perturb jpeg:50,70,90 blur:1,2,3 noise:3,7 resize:0.5,0.75] \\
      [--figures] [--num_examples N] [--batch_size B] [--max_examples N]

Prints the table(s) and writes into OUT (default ``DIR/evaluation`` of the
first DIR):

- ``results.json``: with one checkpoint ``{SPEC: metrics}``; with several
  ``{label: {SPEC: metrics}}``. ``metrics`` holds the selected protocol's
  numbers (``pixel_f1``, ``pixel_auc``, ... fractions in [0, 1], see
  ``sdpal_jax.metrics``; with ``--protocol all`` the ``dataset`` protocol's,
  and every protocol's under ``"protocols"``), ``"skipped"`` (unreadable
  items: ``[{"path", "reason"}]``), ``"warnings"``, ``"timing"`` (seconds in
  the model vs in the metrics) and, with ``--perturb``, ``"robustness"``:
  ``{"jpeg:50": metrics, ...}``.
- ``results.md|csv|tex``: rows = checkpoints, columns = datasets x (AUC, F1),
  in percent (``results_<protocol>.*`` for each protocol with ``all``).
- ``robustness_<kind>.md|csv|tex`` per perturbation kind.
- with ``--figures``: ``figures/<dataset>_roc.png``, ``<dataset>_pr.png`` and
  ``<label>_<dataset>_examples.png`` (image | ground truth | probability | overlay).

Resolution: ``native`` (default) scores each photo at its own size (the
predictor resizes its output back); ``release`` resizes photo and mask to the
checkpoint's ``preprocess.image_size`` first (the SDPAL release scores
256x256 maps against masks resized with bilinear + ``> 128``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np
import tqdm

from sdpal_jax import metrics as metrics_lib
from sdpal_jax import perturbations as perturbations_lib
from sdpal_jax import preprocessing, reporting
from sdpal_jax.errors import ConfigError, SdpalError

PROTOCOL_CHOICES = ("dataset", "image", "best", "all")
RESOLUTIONS = ("native", "release")


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


def _open_predictor(workdir: str) -> PredictorLike:
  try:
    from sdpal_jax.inference import Predictor  # noqa: PLC0415 (pulls in JAX and the model)

    return Predictor.from_checkpoint(workdir)
  except ImportError as e:
    raise SdpalError(f"cannot load checkpoint {workdir}: a package module is missing ({e}).") from e


def _open_source(spec: str) -> Iterable[dict[str, Any]]:
  try:
    from sdpal_jax.datasets.sources import open_source  # noqa: PLC0415
  except ImportError as e:
    raise SdpalError(
      f"cannot open dataset {spec!r}: sdpal_jax.datasets.sources is unavailable ({e})."
    ) from e
  return open_source(spec)


def _unique_labels(labels: list[str]) -> list[str]:
  seen: dict[str, int] = {}
  unique = []
  for label in labels:
    seen[label] = seen.get(label, 0) + 1
    unique.append(label if seen[label] == 1 else f"{label}_{seen[label]}")
  return unique


def _default_label(workdir: Any, index: int) -> str:
  if isinstance(workdir, str):
    return os.path.basename(os.path.normpath(workdir)) or f"model{index}"
  return str(getattr(workdir, "label", f"model{index}"))


def _check_item(item: dict[str, Any]) -> str | None:
  """Why an item cannot be scored, or None."""
  image, mask = np.asarray(item.get("image")), np.asarray(item.get("mask"))
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    return f"image is {image.dtype} {image.shape}, expected uint8 [H, W, 3]"
  if mask.shape != image.shape[:2]:
    return f"mask shape {mask.shape} differs from image size {image.shape[:2]}"
  return None


class _SpecEvaluation:
  """Accumulators, timing and bookkeeping for one (checkpoint, dataset, perturbation)."""

  def __init__(self, protocols, histogram_bins, want_curves, num_examples):
    self.accumulators = {
      p: metrics_lib.make_accumulator(p, histogram_bins=histogram_bins) for p in protocols
    }
    self.curves = None
    if want_curves:
      pooled = [a for p, a in self.accumulators.items() if p != "image"]
      self.curves = (
        pooled[0] if pooled else metrics_lib.DatasetMetrics(histogram_bins=histogram_bins)
      )
      if not pooled:
        self.accumulators["_curves"] = self.curves
    self.num_examples = num_examples
    self.examples: list[dict[str, np.ndarray]] = []
    self.skipped: list[dict[str, str]] = []
    self.model_seconds = 0.0
    self.metrics_seconds = 0.0
    self.num_scored = 0

  def score(self, predictor: PredictorLike, batch: list[_Example]) -> None:
    if not batch:
      return
    start = time.perf_counter()
    probs = np.asarray(predictor.predict_probabilities(np.stack([e.image for e in batch])))
    self.model_seconds += time.perf_counter() - start
    start = time.perf_counter()
    for example, prob in zip(batch, probs, strict=True):
      for accumulator in self.accumulators.values():
        accumulator.update(prob, example.mask, tampered=example.tampered)
    self.metrics_seconds += time.perf_counter() - start
    self.num_scored += len(batch)
    for example, prob in zip(batch, probs, strict=True):
      if len(self.examples) < self.num_examples:
        self.examples.append(
          {"name": example.name, "image": example.image, "mask": example.mask, "probs": prob}
        )

  def result(self, primary: str, spec: str) -> dict[str, Any]:
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      by_protocol = {p: a.result() for p, a in self.accumulators.items() if not p.startswith("_")}
    messages = list(dict.fromkeys(str(w.message) for w in caught))
    for message in messages:
      warnings.warn(f"{spec}: {message}", metrics_lib.MetricWarning, stacklevel=4)
    result = dict(by_protocol[primary])
    if len(by_protocol) > 1:
      result["protocols"] = by_protocol
    result["skipped"] = self.skipped
    result["warnings"] = messages
    result["timing"] = {
      "model_seconds": self.model_seconds,
      "metrics_seconds": self.metrics_seconds,
      "images": self.num_scored,
    }
    return result


def _evaluate_one(
  predictor: PredictorLike,
  source: Iterable[dict[str, Any]],
  state: _SpecEvaluation,
  *,
  resolution: str,
  perturbation: perturbations_lib.Perturbation | None,
  batch_size: int,
  max_examples: int | None,
  description: str,
  progress: bool,
) -> None:
  total = None
  try:
    total = len(source)  # type: ignore[arg-type]
  except TypeError:
    pass
  if max_examples:
    total = min(total, max_examples) if total is not None else max_examples
  release_size = None
  if resolution == "release":
    release_size = predictor.preprocess_config.image_size
    if release_size is None:
      raise ConfigError(
        "--resolution=release needs the checkpoint's preprocess.image_size; it is None "
        "(the model was trained at native resolution): use --resolution=native."
      )
  batch: list[_Example] = []
  seen = 0
  for item in tqdm.tqdm(source, total=total, desc=description, disable=not progress, leave=False):
    if max_examples and seen >= max_examples:
      break
    seen += 1
    name = str(item.get("name", f"item{seen}"))
    problem = _check_item(item)
    if problem:
      state.skipped.append({"path": name, "reason": problem})
      continue
    image = np.asarray(item["image"])
    mask = (np.asarray(item["mask"]) > 0).astype(np.uint8)
    tampered = bool(item.get("tampered", mask.any()))
    if perturbation is not None:
      image = perturbation(image, key=name)
    if release_size is not None:
      image = preprocessing.resize_image(image, release_size)
      mask = preprocessing.resize_mask(mask, release_size)
    if batch and (len(batch) >= batch_size or batch[0].image.shape != image.shape):
      state.score(predictor, batch)
      batch = []
    batch.append(_Example(name, image, mask, tampered))
  state.score(predictor, batch)
  state.skipped += [
    {"path": str(path), "reason": str(reason)} for path, reason in getattr(source, "skipped", [])
  ]


def evaluate_datasets(
  workdirs: Sequence[str | PredictorLike],
  specs: Sequence[str | tuple[str, Iterable[dict[str, Any]]]],
  *,
  labels: Sequence[str] | None = None,
  protocol: str = "dataset",
  resolution: str = "native",
  output_dir: str | None = None,
  perturbations: Sequence[str | perturbations_lib.Perturbation] = (),
  figures: bool = False,
  num_examples: int = 4,
  batch_size: int = 1,
  max_examples: int | None = None,
  histogram_bins: int | None = None,
  progress: bool = True,
  verbose: bool = True,
) -> dict[str, Any]:
  """Scores every checkpoint on every dataset; writes tables when ``output_dir`` is set.

  Args:
    workdirs: checkpoint directories, or ready predictors (anything with
      ``predict_probabilities`` and ``preprocess_config``).
    specs: dataset SPECs (see ``sdpal_jax.datasets.sources.open_source``), or
      ``(name, source)`` pairs where ``source`` is a re-iterable of
      ``{"image", "mask", "tampered", "name"}`` dicts.
    labels: row labels, one per workdir (default: directory names).
    protocol: ``dataset`` | ``image`` | ``best`` | ``all`` (``sdpal_jax.metrics``).
    resolution: ``native`` | ``release`` (module docstring).
    perturbations: e.g. ``["jpeg:50,70", "blur:1"]``; every dataset is also
      scored under each (``sdpal_jax.perturbations``).
    figures / num_examples: ROC/PR curves and a grid of ``num_examples`` items.
    batch_size: images per model call (consecutive images of equal size).
    max_examples: score at most this many items per dataset.
    histogram_bins: None for the exact pooled AUC, else the fixed-memory histogram.

  Returns:
    ``{spec: metrics}`` for one workdir, ``{label: {spec: metrics}}`` for several.
  """
  if protocol not in PROTOCOL_CHOICES:
    raise ConfigError(f"--protocol={protocol!r}; expected one of {', '.join(PROTOCOL_CHOICES)}.")
  if resolution not in RESOLUTIONS:
    raise ConfigError(f"--resolution={resolution!r}; expected one of {', '.join(RESOLUTIONS)}.")
  if not workdirs:
    raise ConfigError("no checkpoint given: pass --workdir DIR[,DIR...].")
  if not specs:
    raise ConfigError("no dataset given: pass --datasets SPEC[,SPEC...].")
  if batch_size < 1:
    raise ConfigError(f"--batch_size={batch_size}; must be at least 1.")
  if labels is not None and len(labels) != len(workdirs):
    raise ConfigError(f"--labels has {len(labels)} names for {len(workdirs)} workdirs.")
  protocols = list(metrics_lib.PROTOCOLS) if protocol == "all" else [protocol]
  primary = protocols[0]
  parsed_perturbations = [
    p for spec in perturbations
    for p in ([spec] if isinstance(spec, perturbations_lib.Perturbation)
              else perturbations_lib.parse_perturbations(spec))
  ]  # fmt: skip
  labels = _unique_labels(
    list(labels) if labels is not None else [_default_label(w, i) for i, w in enumerate(workdirs)]
  )
  named_specs = [(s, None) if isinstance(s, str) else (str(s[0]), s[1]) for s in specs]

  results: dict[str, dict[str, Any]] = {}
  curves: dict[str, dict[str, tuple]] = {}
  grids: list[tuple[str, str, list]] = []
  for label, workdir in zip(labels, workdirs, strict=True):
    predictor = _open_predictor(workdir) if isinstance(workdir, str) else workdir
    results[label] = {}
    for spec, given_source in named_specs:
      runs = [None, *parsed_perturbations]
      per_run = {}
      for perturbation in runs:
        source = given_source if given_source is not None else _open_source(spec)
        clean = perturbation is None
        state = _SpecEvaluation(
          protocols, histogram_bins, figures and clean, num_examples if clean else 0
        )
        suffix = "" if clean else f" [{perturbation.name}]"
        _evaluate_one(
          predictor,
          source,
          state,
          resolution=resolution,
          perturbation=perturbation,
          batch_size=batch_size,
          max_examples=max_examples,
          description=f"{label} {reporting.dataset_label(spec)}{suffix}",
          progress=progress,
        )
        per_run[perturbation] = state.result(primary, spec + suffix)
        if clean and figures:
          curves.setdefault(spec, {})[label] = state.curves.counts()
          grids.append((label, spec, state.examples))
        if verbose:
          _log_timing(label, spec + suffix, per_run[perturbation]["timing"])
      metrics = per_run.pop(None)
      if per_run:
        metrics["robustness"] = {
          p.name: {k: v for k, v in m.items() if k not in ("protocols", "timing")}
          for p, m in per_run.items()
        }
      results[label][spec] = metrics

  spec_names = [s for s, _ in named_specs]
  if output_dir:
    _write_outputs(
      results, output_dir, spec_names, protocols, parsed_perturbations, labels, verbose
    )
    if figures:
      _write_figures(output_dir, curves, grids)
  elif verbose:
    print(
      reporting.to_markdown(reporting.build_table(_protocol_view(results, primary), spec_names))
    )
  return results[labels[0]] if len(labels) == 1 else results


def _log_timing(label: str, spec: str, timing: dict[str, float]) -> None:
  images = max(timing["images"], 1)
  logging.info(
    "%s on %s: %d images, model %.3f s/img, metrics %.4f s/img",
    label,
    spec,
    timing["images"],
    timing["model_seconds"] / images,
    timing["metrics_seconds"] / images,
  )


def _protocol_view(results, protocol: str) -> dict[str, dict[str, dict]]:
  return {
    label: {spec: m.get("protocols", {}).get(protocol, m) for spec, m in per_spec.items()}
    for label, per_spec in results.items()
  }


def _write_outputs(results, output_dir, spec_names, protocols, perturbations, labels, verbose):
  os.makedirs(output_dir, exist_ok=True)
  json_value = results[labels[0]] if len(labels) == 1 else results
  reporting.write_json(os.path.join(output_dir, "results.json"), json_value)
  tables = {"results": reporting.build_table(_protocol_view(results, protocols[0]), spec_names)}
  if len(protocols) > 1:
    for protocol in protocols:
      tables[f"results_{protocol}"] = reporting.build_table(
        _protocol_view(results, protocol), spec_names
      )
  for kind in dict.fromkeys(p.kind for p in perturbations):
    rows = {}
    for label, per_spec in results.items():
      rows[f"{label} clean"] = per_spec
      for p in (p for p in perturbations if p.kind == kind):
        rows[f"{label} {p.name}"] = {
          spec: m.get("robustness", {}).get(p.name, {}) for spec, m in per_spec.items()
        }
    tables[f"robustness_{kind}"] = reporting.build_table(rows, spec_names)
  for name, table in tables.items():
    reporting.write_tables(table, output_dir, name)
    if verbose:
      heading = f"{name} (protocol: {protocols[0]})" if name == "results" else name
      print(f"\n{heading}\n")
      print(reporting.to_markdown(table))


def _write_figures(output_dir, curves, grids) -> None:
  from sdpal_jax import figures as figures_lib  # noqa: PLC0415 (matplotlib only when asked)

  figure_dir = os.path.join(output_dir, "figures")
  os.makedirs(figure_dir, exist_ok=True)
  for spec, by_label in curves.items():
    name = _file_safe(reporting.dataset_label(spec))
    figures_lib.plot_curves(
      by_label,
      os.path.join(figure_dir, f"{name}_roc.png"),
      os.path.join(figure_dir, f"{name}_pr.png"),
      title=reporting.dataset_label(spec),
    )
  for label, spec, examples in grids:
    if examples:
      name = f"{_file_safe(label)}_{_file_safe(reporting.dataset_label(spec))}_examples.png"
      figures_lib.plot_qualitative_grid(
        examples, os.path.join(figure_dir, name), title=f"{label} on {spec}"
      )


def _file_safe(text: str) -> str:
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


# --------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------


def _define_flags():
  from absl import flags  # noqa: PLC0415

  flags.DEFINE_list("workdir", None, "Checkpoint directories (training workdirs or converted).")
  flags.DEFINE_list("labels", None, "Row labels, one per workdir (default: directory names).")
  flags.DEFINE_list("datasets", None, "Dataset SPECs: tfds name[:split], .lst, .json, or folder.")
  flags.DEFINE_enum("protocol", "dataset", PROTOCOL_CHOICES, "Metric protocol.")
  flags.DEFINE_enum("resolution", "native", RESOLUTIONS, "Score at native or release size.")
  flags.DEFINE_string("output_dir", None, "Where tables go (default: FIRST_WORKDIR/evaluation).")
  flags.DEFINE_multi_string(
    "perturb", [], "Robustness perturbations, e.g. --perturb jpeg:50,70,90 blur:1,2,3 noise:3,7."
  )
  flags.DEFINE_bool("figures", False, "Write ROC/PR curves and a qualitative grid.")
  flags.DEFINE_integer("num_examples", 4, "Rows of the qualitative grid.")
  flags.DEFINE_integer("batch_size", 1, "Images per model call.")
  flags.DEFINE_integer("max_examples", None, "Score at most this many items per dataset.")
  flags.DEFINE_integer("histogram_bins", 0, "0: exact pooled AUC; N: fixed-memory N-bin histogram.")
  flags.mark_flags_as_required(["workdir", "datasets"])
  return flags.FLAGS


def main(argv: Sequence[str]) -> None:
  from absl import flags  # noqa: PLC0415

  flag_values = flags.FLAGS
  # ``--perturb jpeg:50 blur:1`` leaves ``blur:1`` as a positional argument.
  extra = list(argv[1:])
  unexpected = [a for a in extra if a.split(":")[0] not in perturbations_lib.KINDS]
  if unexpected:
    raise SdpalError(f"unexpected arguments {unexpected}; see --help.")
  logging.getLogger().setLevel(logging.INFO)
  output_dir = flag_values.output_dir or os.path.join(flag_values.workdir[0], "evaluation")
  evaluate_datasets(
    flag_values.workdir,
    flag_values.datasets,
    labels=flag_values.labels,
    protocol=flag_values.protocol,
    resolution=flag_values.resolution,
    output_dir=output_dir,
    perturbations=[*flag_values.perturb, *extra],
    figures=flag_values.figures,
    num_examples=flag_values.num_examples,
    batch_size=flag_values.batch_size,
    max_examples=flag_values.max_examples,
    histogram_bins=flag_values.histogram_bins or None,
  )
  print(f"\nWrote {output_dir}/results.json")


def run_main() -> None:
  """Console entry point (``sdpal-evaluate``)."""
  import sys  # noqa: PLC0415

  from absl import app  # noqa: PLC0415

  _define_flags()

  def guarded(argv):
    try:
      main(argv)
    except SdpalError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)

  app.run(guarded)


if __name__ == "__main__":
  run_main()
