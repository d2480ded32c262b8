"""Evaluates checkpoints on forgery datasets and writes F1/AUC tables.

  python -m sdpal_jax.evaluate --workdir DIR[,DIR...] [--labels A,B] [--step N|all] \\
      [--baselines centre] \\
      --datasets SPEC[,SPEC...] [--protocol dataset|image|best|all] \\
      [--resolution native|release] [--full_resolution [--tile_size PX]] \\
      [--threshold 0.5] [--image_score top1|topP|max|mean|area] [--output_dir OUT] \\
      [--perturb jpeg:50,70,90 blur:1,2,3 noise:3,7 resize:0.5,0.75 | benco] \\
      [--figures] [--num_examples N] [--batch_size B] [--max_examples N]

A SPEC may be IMDL-BenCo's ``test_datasets.json`` (``{name: path}``): each
entry becomes a dataset of its own, named by its key
(``sdpal_jax.datasets.sources.expand_spec``).

Prints the table(s) and writes into OUT (default ``DIR/evaluation`` of the
first DIR):

- ``results.json``: with one checkpoint ``{SPEC: metrics}``; with several
  ``{label: {SPEC: metrics}}``. ``metrics`` holds the selected protocol's
  numbers (``pixel_f1``, ``pixel_auc``, ... fractions in [0, 1], see
  ``sdpal_jax.metrics``; with ``--protocol all`` the ``dataset`` protocol's,
  and every protocol's under ``"protocols"``), ``"num_scored"`` and
  ``"num_skipped"`` images, ``"skipped"`` (unreadable items:
  ``[{"path", "reason"}]``), ``"warnings"``, ``"timing"`` (seconds in
  the model vs in the metrics) and, with ``--perturb``, ``"robustness"``:
  ``{"jpeg:50": metrics, ...}``.
- ``results.md|csv|tex``: rows = checkpoints, columns = datasets x (AUC, F1),
  in percent (``results_<protocol>.*`` for each protocol with ``all``).
- ``robustness_<kind>.md|csv|tex`` per perturbation kind.
- ``per_image.csv`` (unless ``--noper_image``): one row per scored image of
  every checkpoint x dataset x perturbation (``reporting.PER_IMAGE_COLUMNS``:
  name, tampered, image score, pixel F1 / precision / recall / IoU at the
  threshold, the map's AUC and best F1, ...), sorted as scored, to find the
  failures behind a number.
- with ``--figures``: ``figures/<dataset>_roc.png``, ``<dataset>_pr.png`` and
  ``<label>_<dataset>_examples.png`` (image | ground truth | probability | overlay).

A dataset of which no image could be scored stops the command (exit status
2, the unreadable files named) and no table is written: a number is only
printed for a split that was measured. With some images skipped the table's
column says how many were scored (``casia_v1 (95/100 scored)``).

Every number comes from ``sdpal_jax.evaluator.Evaluator``, the same code that
picks a training run's ``best/`` checkpoint.

Resolution: ``native`` (default) scores each photo at its own size (the
predictor resizes its output back); ``release`` resizes photo and mask to the
checkpoint's ``preprocess.image_size`` first (the SDPAL release scores
256x256 maps against masks resized with bilinear + ``> 128``).
``--full_resolution`` feeds the network each photo at its own size, in
``--tile_size`` tiles above that size, exactly as ``predict --full_resolution``
(both through ``Predictor.from_checkpoint(full_resolution=, tile_size=)``).

Baselines: ``--baselines centre`` adds a row for a map that needs no model
(``sdpal_jax.baselines.centre_prior``: the middle of the photo is tampered),
the floor a checkpoint's score is read against; with no ``--workdir`` only
the baseline is scored (``--output_dir`` is then required).

Checkpoints: each ``--workdir`` is scored at its best (else latest) step;
``--step N`` picks step N of every workdir (row ``DIR@N``), ``--step all``
scores every saved step (``checkpoint.saved_steps``), one row ``DIR@STEP`` each.

Decisions: ``--threshold`` (default 0.5) is the probability above which a
pixel, and the score above which an image, is called tampered;
``--image_score`` picks how an image's score comes from its map
(``sdpal_jax.metrics.image_score_fn``). ``docs/metrics.md`` says which
protocol each paper's numbers use.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

from absl import flags

from sdpal_jax import baselines, checkpoint, cli, reporting
from sdpal_jax import figures as figures_lib
from sdpal_jax import metrics as metrics_lib
from sdpal_jax import perturbations as perturbations_lib
from sdpal_jax.datasets import sources
from sdpal_jax.errors import ConfigError, SdpalError
from sdpal_jax.evaluator import (
  PROTOCOL_CHOICES,
  RESOLUTIONS,
  EvaluationError,
  Evaluator,
  PredictorLike,
  validate_scoring_options,
)
from sdpal_jax.inference import Predictor

__all__ = ["EvaluationError", "EvaluationRequest", "evaluate_datasets"]


def _saved_steps(workdir: str) -> list[int]:
  workdir = checkpoint.resolve_directory(workdir)
  if not os.path.isdir(workdir):
    raise SdpalError(f"{workdir}: no such checkpoint directory.")
  if checkpoint.is_ensemble(workdir):
    raise SdpalError(f"{workdir} is an ensemble of checkpoints: it has no steps; leave --step out.")
  return checkpoint.saved_steps(workdir)


def parse_step(step: int | str | None) -> int | str | None:
  """``None`` (best, else latest), an int, or ``"all"``; ConfigError otherwise."""
  if step is None or step == "" or step == "all":
    return step or None
  try:
    value = int(step)
  except (TypeError, ValueError):
    raise ConfigError(f"--step={step!r}; expected a step number or 'all'.") from None
  if value < 0:
    raise ConfigError(f"--step={step!r}; expected a step number >= 0 or 'all'.")
  return value


def checkpoint_runs(workdirs, labels, step) -> list[tuple[str, Any, int | None]]:
  """``(row label, workdir or predictor, step)`` for each checkpoint to score.

  With ``step`` None: one row per workdir, labelled as given. With a number:
  that step of each workdir, labelled ``LABEL@STEP``. With ``"all"``: every
  saved step of each workdir, ascending, ``LABEL@STEP`` each. Predictors
  passed directly are used as they are.
  """
  runs = []
  for label, workdir in zip(labels, workdirs, strict=True):
    if step is None or not isinstance(workdir, str):
      runs.append((label, workdir, None))
    elif step == "all":
      steps = _saved_steps(workdir)
      if not steps:
        raise SdpalError(f"{workdir}: --step=all, but it has no saved checkpoint step.")
      runs += [(f"{label}@{s}", workdir, s) for s in steps]
    else:
      runs.append((f"{label}@{step}", workdir, int(step)))
  return runs


def expand_specs(specs) -> list[str | tuple[str, Any]]:
  """Each IMDL-BenCo ``{name: path}`` JSON in ``specs`` becomes ``(name, path)`` per entry."""
  expanded: list[str | tuple[str, Any]] = []
  for spec in specs:
    if not isinstance(spec, str):
      expanded.append(spec)
      continue
    for name, path in sources.expand_spec(spec):
      expanded.append(spec if (name, path) == (spec, spec) else (name, path))
  return expanded


def _default_label(workdir: Any, index: int) -> str:
  if isinstance(workdir, str):
    return os.path.basename(os.path.normpath(workdir)) or f"model{index}"
  return str(getattr(workdir, "label", f"model{index}"))


@dataclasses.dataclass(frozen=True)
class EvaluationRequest:
  """How every checkpoint is scored on every dataset: the ``evaluate`` flags, checked once.

  Invalid values raise ConfigError naming the flag when the request is made;
  ``evaluate_datasets`` then builds one ``Evaluator`` per dataset and
  perturbation from it (``evaluator``).

  Attributes:
    protocol: ``dataset`` | ``image`` | ``best`` | ``all`` (``sdpal_jax.metrics``).
    resolution: ``native`` | ``release`` (module docstring).
    threshold: pixel and image decision threshold (tampered iff greater).
    image_score: image-level score rule (``sdpal_jax.metrics.image_score_fn``).
    batch_size: images per model call (consecutive images of equal size).
    max_examples: score at most this many items per dataset (None: all).
    histogram_bins: None for the exact pooled AUC, else the fixed-memory histogram.
    perturbations: e.g. ``("jpeg:50,70", "blur:1")`` or ``Perturbation``s; every
      dataset is also scored under each (``sdpal_jax.perturbations``); held parsed.
    figures / num_examples: ROC/PR curves and a grid of ``num_examples`` items.
    per_image: write ``per_image.csv`` next to the tables.
    step: None (best, else latest), a step number, or ``"all"`` (every saved
      step); rows are then labelled ``LABEL@STEP``. Held parsed (``parse_step``).
    full_resolution / tile_size / tile_overlap / flip_average: as ``predict``'s
      flags (``Predictor.from_checkpoint``).
  """

  protocol: str = "dataset"
  resolution: str = "native"
  threshold: float = metrics_lib.THRESHOLD
  image_score: str = metrics_lib.DEFAULT_IMAGE_SCORE
  batch_size: int = 1
  max_examples: int | None = None
  histogram_bins: int | None = None
  perturbations: Sequence[str | perturbations_lib.Perturbation] = ()
  figures: bool = False
  num_examples: int = 4
  per_image: bool = True
  step: int | str | None = None
  full_resolution: bool = False
  tile_size: int | None = None  # None: the checkpoint's preprocess.tile_size, else 2048
  tile_overlap: int | None = None
  flip_average: bool = False

  def __post_init__(self):
    validate_scoring_options(
      protocol=self.protocol,
      resolution=self.resolution,
      batch_size=self.batch_size,
      threshold=self.threshold,
      image_score=self.image_score,
      flag_prefix="--",
    )
    if self.tile_size is not None and self.tile_size < 0:
      raise ConfigError(f"--tile_size={self.tile_size}; must be >= 0 (0: never tile).")
    parsed = tuple(
      p for spec in self.perturbations
      for p in ([spec] if isinstance(spec, perturbations_lib.Perturbation)
                else perturbations_lib.parse_perturbations(spec))
    )  # fmt: skip
    object.__setattr__(self, "perturbations", parsed)
    object.__setattr__(self, "step", parse_step(self.step))

  @classmethod
  def from_flags(cls, flag_values, extra_perturbations: Sequence[str] = ()) -> EvaluationRequest:
    """The request the command line's flags describe (``--perturb`` plus ``extra_perturbations``)."""
    return cls(
      protocol=flag_values.protocol,
      resolution=flag_values.resolution,
      threshold=flag_values.threshold,
      image_score=flag_values.image_score,
      batch_size=flag_values.batch_size,
      max_examples=flag_values.max_examples,
      histogram_bins=flag_values.histogram_bins or None,
      perturbations=(*flag_values.perturb, *extra_perturbations),
      figures=flag_values.figures,
      num_examples=flag_values.num_examples,
      per_image=flag_values.per_image,
      step=flag_values.step,
      full_resolution=flag_values.full_resolution,
      tile_size=flag_values.tile_size,
      tile_overlap=flag_values.tile_overlap,
      flip_average=flag_values.flip_average,
    )

  @property
  def protocols(self) -> list[str]:
    """Every protocol scored: the primary one first."""
    return list(metrics_lib.PROTOCOLS) if self.protocol == "all" else [self.protocol]

  def evaluator(
    self,
    dataset: str | tuple[str, Iterable[dict[str, Any]]],
    perturbation: perturbations_lib.Perturbation | None = None,
    *,
    keep_per_image: bool = False,
    progress: bool = False,
  ) -> Evaluator:
    """The ``Evaluator`` of one dataset (SPEC or ``(name, source)``), clean or perturbed."""
    clean = perturbation is None
    return Evaluator(
      dataset,
      protocol=self.protocol,
      resolution=self.resolution,
      threshold=self.threshold,
      image_score=self.image_score,
      per_image=keep_per_image,
      perturbation=perturbation,
      batch_size=self.batch_size,
      max_examples=self.max_examples,
      histogram_bins=self.histogram_bins,
      num_examples=self.num_examples if clean and self.figures else 0,
      want_curves=self.figures and clean,
      progress=progress,
    )

  def open_predictor(self, workdir: str, step: int | None) -> PredictorLike:
    """``Predictor.from_checkpoint`` of ``workdir`` at ``step`` with the request's input size."""
    return Predictor.from_checkpoint(
      workdir,
      step=step,
      full_resolution=self.full_resolution,
      tile_size=self.tile_size,
      tile_overlap=self.tile_overlap,
      flip_average=self.flip_average,
    )


def evaluate_datasets(
  workdirs: Sequence[str | PredictorLike],
  specs: Sequence[str | tuple[str, Iterable[dict[str, Any]]]],
  request: EvaluationRequest | None = None,
  *,
  labels: Sequence[str] | None = None,
  output_dir: str | None = None,
  progress: bool = True,
  verbose: bool = True,
) -> dict[str, dict[str, Any]]:
  """Scores every checkpoint on every dataset; writes tables when ``output_dir`` is set.

  Args:
    workdirs: checkpoint directories, or ready predictors (anything with
      ``predict_probabilities`` and ``preprocess_config``).
    specs: dataset SPECs (see ``sdpal_jax.datasets.sources.open_source``; an
      IMDL-BenCo ``{name: path}`` JSON expands to its entries), ``(name, SPEC)``,
      or ``(name, source)`` pairs where ``source`` is a re-iterable of
      ``{"image", "mask", "tampered", "name"}`` dicts.
    request: how to score (``EvaluationRequest``; None: its defaults).
    labels: row labels, one per workdir (default: directory names).
    output_dir: where ``results.json``, the tables and figures go (None: print only).
    progress: show a progress bar per dataset.
    verbose: log timings and print the tables.

  Returns:
    ``{label: {dataset name: metrics}}``, one entry per scored checkpoint (row).
  """
  request = request if request is not None else EvaluationRequest()
  if not workdirs:
    raise ConfigError("no checkpoint given: pass --workdir DIR[,DIR...].")
  if not specs:
    raise ConfigError("no dataset given: pass --datasets SPEC[,SPEC...].")
  if labels is not None and len(labels) != len(workdirs):
    raise ConfigError(f"--labels has {len(labels)} names for {len(workdirs)} workdirs.")
  labels = reporting.unique_names(
    list(labels) if labels is not None else [_default_label(w, i) for i, w in enumerate(workdirs)]
  )
  runs = checkpoint_runs(workdirs, labels, request.step)
  labels = reporting.unique_names([label for label, _, _ in runs])
  specs = expand_specs(specs)
  spec_names = reporting.unique_names([s if isinstance(s, str) else str(s[0]) for s in specs])
  datasets = [
    name if isinstance(s, str) and name == s else (name, s if isinstance(s, str) else s[1])
    for name, s in zip(spec_names, specs, strict=True)
  ]
  keep_per_image = request.per_image and bool(output_dir)

  results: dict[str, dict[str, Any]] = {}
  curves: dict[str, dict[str, tuple]] = {}
  grids: list[tuple[str, str, list]] = []
  image_rows: list[dict[str, Any]] = []
  for label, (_, workdir, run_step) in zip(labels, runs, strict=True):
    predictor = request.open_predictor(workdir, run_step) if isinstance(workdir, str) else workdir
    results[label] = {}
    for spec, dataset in zip(spec_names, datasets, strict=True):
      per_run = {}
      for perturbation in [None, *request.perturbations]:
        runner = request.evaluator(
          dataset, perturbation, keep_per_image=keep_per_image, progress=progress
        )
        per_run[perturbation] = runner.run(predictor)
        condition = "clean" if perturbation is None else perturbation.name
        image_rows += [
          {"model": label, "dataset": spec, "perturbation": condition, **row}
          for row in runner.per_image
        ]
        if perturbation is None and request.figures:
          curves.setdefault(spec, {})[label] = runner.curves.counts()
          grids.append((label, spec, runner.examples))
        if verbose:
          suffix = "" if perturbation is None else f" [{perturbation.name}]"
          _log_timing(label, spec + suffix, per_run[perturbation]["timing"])
      metrics = per_run.pop(None)
      if per_run:
        metrics["robustness"] = {
          p.name: {k: v for k, v in m.items() if k not in ("protocols", "timing", "notes")}
          for p, m in per_run.items()
        }
      results[label][spec] = metrics

  if output_dir:
    _write_outputs(
      results, output_dir, spec_names, request.protocols, request.perturbations, labels, verbose
    )
    if request.per_image:
      reporting.write_per_image_csv(os.path.join(output_dir, "per_image.csv"), image_rows)
    if request.figures:
      _write_figures(output_dir, curves, grids)
  elif verbose:
    print(
      reporting.to_markdown(
        reporting.build_table(_protocol_view(results, request.protocols[0]), spec_names)
      )
    )
  return results


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


def _define_flags() -> None:
  flags.DEFINE_list("workdir", None, "Checkpoint directories (training workdirs or converted).")
  flags.DEFINE_list(
    "baselines",
    [],
    "Reference maps scored as extra rows, no model needed: 'centre' (sdpal_jax.baselines).",
  )
  flags.DEFINE_list("labels", None, "Row labels, one per workdir (default: directory names).")
  flags.DEFINE_string(
    "step", None, "Checkpoint step: N, or 'all' (every saved step, one row DIR@STEP each)."
  )
  flags.DEFINE_list(
    "datasets",
    None,
    "Dataset SPECs: tfds name[:split] (split slices: test[:50], test+validation), .lst, "
    ".json (IMDL-BenCo list, or its test_datasets.json {name: path}: one dataset per entry), "
    "or a Tp/+Gt/ folder.",
  )
  flags.DEFINE_float(
    "threshold", metrics_lib.THRESHOLD, "Pixel and image decision threshold (tampered iff >)."
  )
  flags.DEFINE_string(
    "image_score",
    metrics_lib.DEFAULT_IMAGE_SCORE,
    "Image-level score: top1 (mean of the top 1% of pixels), topP (P percent), max, mean, "
    "area (fraction above --threshold).",
  )
  flags.DEFINE_bool(
    "full_resolution", False, "Feed photos at their own size (as predict --full_resolution)."
  )
  flags.DEFINE_integer(
    "tile_size",
    None,
    "With --full_resolution: photos larger than this go in tiles (0: never; default: the "
    "checkpoint's preprocess.tile_size, else 2048).",
  )
  flags.DEFINE_integer(
    "tile_overlap", None, "Pixels shared by neighbouring tiles (default tile_size/8)."
  )
  flags.DEFINE_bool(
    "flip_average",
    False,
    "Average each map with that of the left-right mirrored photo (as predict --flip_average).",
  )
  flags.DEFINE_bool("per_image", True, "Write per_image.csv (one row per scored image).")
  flags.DEFINE_enum("protocol", "dataset", PROTOCOL_CHOICES, "Metric protocol.")
  flags.DEFINE_enum("resolution", "native", RESOLUTIONS, "Score at native or release size.")
  flags.DEFINE_string("output_dir", None, "Where tables go (default: FIRST_WORKDIR/evaluation).")
  flags.DEFINE_multi_string(
    "perturb",
    [],
    "Robustness perturbations, e.g. --perturb jpeg:50,70,90 blur:1,2,3 noise:3,7; IMDL-BenCo's "
    "parameters blur_k:3,7 (kernel size) noise_var:3,7 (variance); 'benco': its whole grid.",
  )
  flags.DEFINE_bool("figures", False, "Write ROC/PR curves and a qualitative grid.")
  flags.DEFINE_integer("num_examples", 4, "Rows of the qualitative grid.")
  flags.DEFINE_integer("batch_size", 1, "Images per model call.")
  flags.DEFINE_integer("max_examples", None, "Score at most this many items per dataset.")
  flags.DEFINE_integer("histogram_bins", 0, "0: exact pooled AUC; N: fixed-memory N-bin histogram.")
  flags.mark_flags_as_required(["datasets"])


def main(argv: Sequence[str]) -> None:
  flag_values = flags.FLAGS
  # ``--perturb jpeg:50 blur:1`` leaves ``blur:1`` as a positional argument.
  extra = list(argv[1:])
  unexpected = [a for a in extra if not perturbations_lib.is_perturbation_token(a)]
  if unexpected:
    raise SdpalError(f"unexpected arguments {unexpected}; see --help.")
  workdirs = list(flag_values.workdir or [])
  reference_maps = baselines.make_baselines(flag_values.baselines)
  if not workdirs and not reference_maps:
    raise ConfigError("no checkpoint given: pass --workdir DIR[,DIR...] or --baselines centre.")
  if not flag_values.output_dir and not workdirs:
    raise ConfigError("--baselines without --workdir needs --output_dir (where the tables go).")
  output_dir = flag_values.output_dir or os.path.join(workdirs[0], "evaluation")
  reporting.check_output_dir(output_dir)
  labels = flag_values.labels
  if labels is not None:
    if len(labels) != len(workdirs):
      raise ConfigError(f"--labels has {len(labels)} names for {len(workdirs)} workdirs.")
    labels = [*labels, *(b.label for b in reference_maps)]
  evaluate_datasets(
    [*workdirs, *reference_maps],
    flag_values.datasets,
    EvaluationRequest.from_flags(flag_values, extra_perturbations=extra),
    labels=labels,
    output_dir=output_dir,
  )
  print(f"\nWrote {output_dir}/results.json")


def run_main() -> None:
  """Console entry point (``sdpal-evaluate``)."""
  cli.run(main, _define_flags)


if __name__ == "__main__":
  run_main()
