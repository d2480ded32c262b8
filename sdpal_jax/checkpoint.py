"""Checkpoint directories: their layout, saving, restoring and resuming, in one place.

Layout of a directory ``DIR`` (a training workdir or a converted checkpoint)::

  DIR/config.json          the full config as JSON; at least "model" (see
                           model_config.default_model_config) and "preprocess".
  DIR/checkpoints/<step>/  orbax CheckpointManager steps; item "model" holds
                           {"params": ..., "batch_stats": ...}; training adds
                           item "train_state" = {"opt_state": ..., "step": ...}.
  DIR/best/<step>/         training only: item "model" of the step with the
                           best validation metric (``config.best_metric``); the
                           metric values are orbax's own step metadata.

An ensemble directory holds instead ``DIR/ensemble.json`` (``ENSEMBLE_FILE``):
``{"combine": "mean_probability", "members": ["members/a", ...]}``, each member
a checkpoint directory of the layout above, relative to ``DIR``; prediction
averages the members' probability maps (``sdpal_jax.inference.EnsemblePredictor``).

``load_inference_checkpoint`` reads ``best/`` when it exists, else the latest
step in ``checkpoints/`` (or the step asked for). A training run
(``TrainingCheckpoints``) starts from, in this order: the latest step in
``checkpoints/`` (resume, optimiser state included), else the converted
ImageNet backbone named by ``config.init_from`` (new layers random), else a
random initialisation. Orbax writes each step to a temporary folder and
renames it when complete, so an interrupted save never leaves a step that
looks finished.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from sdpal_jax import model_config as model_config_lib
from sdpal_jax import torch_import
from sdpal_jax.errors import CheckpointError

CONFIG_FILE = "config.json"
LATEST_DIR = "checkpoints"
BEST_DIR = "best"
MODEL_ITEM = "model"
TRAIN_ITEM = "train_state"
BACKBONE_ITEM = "backbone"
UNREADABLE_DIR = "unreadable"
ENSEMBLE_FILE = "ensemble.json"
# How an ensemble combines its members' maps (``ensemble.json``'s "combine").
ENSEMBLE_COMBINE = "mean_probability"
# ``--checkpoint default`` / ``--workdir default`` (and no ``--checkpoint`` at all
# for predict): the model packaged with the library (``sdpal_jax.packaged_model``).
# A directory of that name in the working directory takes precedence.
DEFAULT_MODEL = "default"
DEFAULT_MODEL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_model")


def resolve_directory(directory: str) -> str:
  """``directory``, or the packaged model's directory for ``"default"`` (see ``DEFAULT_MODEL``)."""
  directory = os.fspath(directory)
  if directory != DEFAULT_MODEL or os.path.isdir(directory):
    return directory
  if not any(
    os.path.isfile(os.path.join(DEFAULT_MODEL_DIR, f)) for f in (CONFIG_FILE, ENSEMBLE_FILE)
  ):
    raise CheckpointError(
      f"this installation has no packaged model ({DEFAULT_MODEL_DIR} is missing or incomplete); "
      "reinstall sdpal_jax or pass --checkpoint DIR."
    )
  return DEFAULT_MODEL_DIR


def is_ensemble(directory: str) -> bool:
  """Whether ``directory`` (or ``"default"``) is an ensemble of checkpoints (``ENSEMBLE_FILE``)."""
  return os.path.isfile(os.path.join(resolve_directory(directory), ENSEMBLE_FILE))


def ensemble_members(directory: str) -> list[str]:
  """The member checkpoint directories of the ensemble ``directory``, in its file's order.

  Raises:
    CheckpointError: naming ``ensemble.json`` when it is unreadable, combines
      maps another way, lists no member, or names a member that is not a
      checkpoint directory inside ``directory``.
  """
  directory = resolve_directory(directory)
  path = os.path.join(directory, ENSEMBLE_FILE)
  try:
    with open(path) as f:
      spec = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise CheckpointError(f"{path}: cannot read the ensemble ({e}).") from e
  if not isinstance(spec, dict) or spec.get("combine") != ENSEMBLE_COMBINE:
    raise CheckpointError(
      f'{path}: expected {{"combine": "{ENSEMBLE_COMBINE}", "members": [...]}}, '
      f"got {json.dumps(spec)[:200]}."
    )
  members = spec.get("members")
  if not isinstance(members, list) or not members:
    raise CheckpointError(f'{path}: "members" must be a non-empty list of folders.')
  paths = []
  for member in members:
    if not isinstance(member, str) or os.path.isabs(member) or ".." in member.split("/"):
      raise CheckpointError(f"{path}: member {member!r} must be a folder inside {directory}.")
    member_dir = os.path.join(directory, member)
    if not os.path.isfile(os.path.join(member_dir, CONFIG_FILE)):
      raise CheckpointError(
        f"{path}: member {member!r} is not a checkpoint directory ({member_dir}/{CONFIG_FILE} "
        "is missing)."
      )
    paths.append(member_dir)
  return paths


def write_ensemble(directory: str, members: list[str]) -> None:
  """Writes ``directory/ensemble.json`` (temporary file + rename) naming ``members``."""
  path = os.path.join(directory, ENSEMBLE_FILE)
  with open(path + ".tmp", "w") as f:
    json.dump({"combine": ENSEMBLE_COMBINE, "members": list(members)}, f, indent=2)
    f.write("\n")
  os.replace(path + ".tmp", path)


def _widen_half_precision(tree):
  """float16 arrays (the packaged model's storage) as float32; everything else unchanged."""
  return jax.tree.map(lambda a: a.astype("float32") if a.dtype == "float16" else a, tree)


@dataclasses.dataclass
class InferenceCheckpoint:
  """What a model needs to predict: variables, model and preprocessing configs."""

  variables: dict[str, Any]
  model_config: ml_collections.ConfigDict
  preprocess_config: ml_collections.ConfigDict
  step: int
  config: ml_collections.ConfigDict
  path: str


def _to_jsonable(value):
  if isinstance(value, ml_collections.ConfigDict):
    return {k: _to_jsonable(v) for k, v in value.items()}
  if isinstance(value, dict):
    return {k: _to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_to_jsonable(v) for v in value]
  return value


def write_config(directory: str, config: ml_collections.ConfigDict) -> None:
  """Writes ``config.json`` atomically (temporary file + rename)."""
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, CONFIG_FILE)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(_to_jsonable(config), f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def _tuples(value, reference):
  """JSON lists back to tuples where the reference config has tuples."""
  if isinstance(reference, tuple) and isinstance(value, list):
    return tuple(value)
  return value


def read_config(directory: str) -> ml_collections.ConfigDict:
  """Reads ``config.json``; model/preprocess fields are merged over the defaults."""
  path = os.path.join(directory, CONFIG_FILE)
  if not os.path.exists(path) and os.path.isfile(os.path.join(directory, ENSEMBLE_FILE)):
    raise CheckpointError(
      f"{directory} is an ensemble of checkpoints ({ENSEMBLE_FILE}): each member has its own "
      "config; read a member's (ensemble_members)."
    )
  if not os.path.exists(path):
    raise CheckpointError(
      f"{path} is missing: {directory} is not an sdpal_jax checkpoint directory "
      "(train with sdpal_jax.train or convert with tools/convert_torch_checkpoint.py)."
    )
  try:
    with open(path) as f:
      raw = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise CheckpointError(f"{path}: cannot read the config ({e}).") from e
  config = ml_collections.ConfigDict(raw)
  with config.unlocked():
    for name, default in (
      ("model", model_config_lib.default_model_config()),
      ("preprocess", model_config_lib.default_preprocess_config()),
    ):
      merged = default
      for key, value in raw.get(name, {}).items():
        if (
          isinstance(value, dict)
          and key in merged
          and isinstance(merged[key], ml_collections.ConfigDict)
        ):
          for k2, v2 in value.items():
            merged[key][k2] = _tuples(v2, merged[key].get(k2))
        else:
          merged[key] = _tuples(value, merged.get(key))
      config[name] = merged
  return config


def checkpoint_manager(
  directory: str,
  *,
  max_to_keep: int | None = 3,
  item_names=(MODEL_ITEM,),
  best_metric: str | None = None,
) -> ocp.CheckpointManager:
  """An orbax CheckpointManager over ``directory``; with ``best_metric`` it keeps the highest.

  Saves are synchronous: ``save`` returns once the step is written, and a failed write is
  raised there, naming its step, rather than by the next save (async orbax keeps a background
  thread's error until then). Training saves once per ``checkpoint_every_steps``.
  """
  options = ocp.CheckpointManagerOptions(
    enable_async_checkpointing=False,
    max_to_keep=max_to_keep,
    create=True,
    best_fn=(lambda metrics: float(metrics[best_metric])) if best_metric else None,
    best_mode="max",
    keep_checkpoints_without_metrics=best_metric is None,
  )
  return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_names=item_names)


def resolve_backbone(path: str) -> str:
  """The orbax PyTree that ``init_from`` names: ``DIR/backbone`` (the converter's output) or DIR.

  Raises a ``CheckpointError`` naming the path when neither holds a converted
  backbone, so a training run stops before any data is read.
  """
  path = os.path.abspath(os.path.expanduser(path))
  for candidate in (os.path.join(path, BACKBONE_ITEM), path):
    if os.path.isdir(candidate) and (
      os.path.exists(os.path.join(candidate, "_METADATA"))
      or os.path.exists(os.path.join(candidate, "_CHECKPOINT_METADATA"))
    ):
      return candidate
  raise CheckpointError(
    f"init_from={path!r}: no converted backbone there (expected the directory written by "
    "`sdpal-convert --kind backbone --output_dir DIR`, i.e. DIR or DIR/backbone)."
  )


def one_line(error: BaseException, limit: int = 400) -> str:
  """The innermost cause's first line (orbax wraps tensorstore's useful line in pages of spec)."""
  while (error.__cause__ or error.__context__) is not None:
    error = error.__cause__ or error.__context__
  lines = str(error).strip().splitlines() or [type(error).__name__]
  text = lines[0].strip()
  return text if len(text) <= limit else text[: limit - 3] + "..."


class NonFiniteStateError(CheckpointError):
  """A saved step whose arrays hold NaN or infinity."""


def _all_finite(tree) -> bool:
  """Whether every floating-point leaf is finite, read from each (replicated) array's local copy."""
  leaves = [
    np.asarray(x.addressable_data(0) if isinstance(x, jax.Array) else x)
    for x in jax.tree_util.tree_leaves(tree)
  ]
  return all(np.isfinite(x).all() for x in leaves if np.issubdtype(x.dtype, np.inexact))


def _damage(step_dir: str, error: BaseException) -> str:
  """Which file of ``step_dir`` is broken, and how: orbax names the array (and its OCDBT
  database) when array data is cut short, but not the file when a JSON metadata file is."""
  if isinstance(error, NonFiniteStateError):
    return str(error)
  for folder, _, names in sorted(os.walk(step_dir)):
    for name in sorted(names):
      path = os.path.join(folder, name)
      try:
        with open(path, "rb") as f:
          head = f.read(1)
          if head not in (b"{", b"["):
            continue
          json.loads(head + f.read())
      except (OSError, ValueError) as e:
        return f"{path}: {one_line(e)}"
  return one_line(error)


def _abstract(tree):
  return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)


class TrainingCheckpoints:
  """The ``checkpoints/`` (latest few) and ``best/`` managers of a training workdir.

  ``state`` arguments are ``sdpal_jax.train_state.TrainState`` values (any
  object with ``params``, ``batch_stats``, ``opt_state``, ``step`` and
  ``replace``).
  """

  def __init__(self, workdir: str, *, keep: int, best_metric: str):
    self.workdir = os.path.abspath(workdir)
    self.best_metric = best_metric
    self.latest = checkpoint_manager(
      os.path.join(self.workdir, LATEST_DIR),
      max_to_keep=keep,
      item_names=(MODEL_ITEM, TRAIN_ITEM),
    )
    self.best = checkpoint_manager(
      os.path.join(self.workdir, BEST_DIR),
      max_to_keep=1,
      item_names=(MODEL_ITEM,),
      best_metric=best_metric,
    )
    self._best_value: float | None = None

  @staticmethod
  def _model_item(state) -> dict[str, Any]:
    return {"params": state.params, "batch_stats": state.batch_stats}

  @staticmethod
  def _train_item(state) -> dict[str, Any]:
    return {"opt_state": state.opt_state, "step": state.step}

  def restore_or_initialize(self, state, init_from: str = ""):
    """``(state, origin)``: the latest step if any, else ``init_from``'s backbone, else ``state``.

    ``origin`` says which: ``"resumed from step N"``, ``"backbone PATH"`` or ``"scratch"``.

    A step that cannot be restored while an earlier one can is damaged (a truncated or
    missing file: the earlier step proves the state's layout matches), as is one holding
    NaN or infinity (saved by a diverged run before training stopped on them): it is moved to
    ``DIR/unreadable/<step>`` with a warning naming the file and the error, and the run
    resumes from the newest intact step. When no step restores, nothing is moved and a
    ``CheckpointError`` names the latest step and why it failed.
    """
    steps = sorted(self.latest.all_steps(), reverse=True)
    failures = []
    for step in steps:
      try:
        restored = self.latest.restore(
          step,
          args=ocp.args.Composite(
            **{
              MODEL_ITEM: ocp.args.StandardRestore(_abstract(self._model_item(state))),
              TRAIN_ITEM: ocp.args.StandardRestore(_abstract(self._train_item(state))),
            }
          ),
        )
      except Exception as e:  # orbax/tensorstore raise many types; named below
        failures.append((step, e))
        continue
      if not _all_finite([restored[MODEL_ITEM], restored[TRAIN_ITEM]]):
        failures.append((step, NonFiniteStateError("it holds non-finite values (a diverged run)")))
        continue
      for bad_step, error in failures:
        self._set_aside(bad_step, error, resumed_step=step)
      if failures:
        self.latest.reload()
      self._forget_best_beyond(step)
      return state.replace(**restored[MODEL_ITEM], **restored[TRAIN_ITEM]), (
        f"resumed from step {step}"
      )
    if failures:
      step, error = failures[0]
      others = f"; the earlier steps {[s for s, _ in failures[1:]]} fail too" if steps[1:] else ""
      raise CheckpointError(
        f"{self.latest.directory}/{step}: cannot restore the training state ({one_line(error)})"
        f"{others}. If the config changed, resume with the workdir's config.json; otherwise "
        "the files are damaged: move the step away to start over."
      ) from error
    if init_from:
      path = resolve_backbone(init_from)
      with ocp.StandardCheckpointer() as checkpointer:
        backbone = checkpointer.restore(path)
      variables = torch_import.merge_backbone_variables(self._model_item(state), backbone)
      return state.replace(
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        opt_state=state.tx.init(variables["params"]),
      ), f"backbone {path}"
    return state, "scratch"

  def _set_aside(self, step: int, error: Exception, *, resumed_step: int) -> None:
    """Moves the damaged ``checkpoints/<step>`` to ``unreadable/<step>`` (kept for inspection)."""
    source = os.path.join(self.latest.directory, str(step))
    target = os.path.join(self.workdir, UNREADABLE_DIR, str(step))
    damage = _damage(source, error)
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(target), exist_ok=True)
      if os.path.exists(target):
        target = f"{target}.{int(time.time())}"
      os.replace(source, target)
    logging.warning(
      "%s is damaged (%s); moved it to %s and resuming from step %d instead.",
      source,
      damage,
      target,
      resumed_step,
    )

  def _forget_best_beyond(self, step: int) -> None:
    """Logs the ``best/`` steps after ``step``: they come from a run that stopped before saving
    its own step there; ``save_if_best`` replaces them once this run's validation beats them."""
    later = [s for s in self.best.all_steps() if s > step]
    if later:
      logging.warning(
        "%s holds step(s) %s, after the resumed step %d (an interrupted run validated them "
        "before its regular save); kept until this run's validation beats them.",
        self.best.directory,
        later,
        step,
      )

  def save(self, step: int, state) -> None:
    """Saves ``state`` as step ``step`` of ``checkpoints/``; returns once it is written.

    A failed write (a full disk, a permission) is a ``CheckpointError`` naming this step.
    """
    self._save(
      self.latest,
      step,
      ocp.args.Composite(
        **{
          MODEL_ITEM: ocp.args.StandardSave(self._model_item(state)),
          TRAIN_ITEM: ocp.args.StandardSave(self._train_item(state)),
        }
      ),
    )

  def _save(self, manager: ocp.CheckpointManager, step: int, args, **kwargs) -> None:
    try:
      manager.save(step, args=args, force=True, **kwargs)
    except Exception as e:  # orbax, tensorstore and the file system raise many types
      raise CheckpointError(
        f"step {step}: saving {manager.directory}/{step} failed ({one_line(e)}); the earlier "
        "steps are intact."
      ) from e

  def best_value(self) -> float | None:
    """The ``best_metric`` of the step kept in ``best/``, or None before the first."""
    if self._best_value is None:
      step = self.best.best_step()
      metrics = (self.best.metrics(step) or {}) if step is not None else {}
      if self.best_metric in metrics:
        self._best_value = float(metrics[self.best_metric])
    return self._best_value

  def save_if_best(self, step: int, state, metrics: dict[str, float]) -> bool:
    """Writes ``state``'s model to ``best/`` when ``metrics[best_metric]`` beats the kept one.

    The comparison uses the value remembered from the last best save, so a save still in
    flight counts. Steps of ``best/`` at or after ``step`` (left by an interrupted run, see
    ``restore_or_initialize``) are beaten by this value too and are deleted first, so that a
    resumed run never meets its own step number there.
    """
    value = float(metrics[self.best_metric])
    if not math.isfinite(value):  # a NaN would rank above every number in orbax's best_fn
      logging.warning("step %d: %s is %s; not a best step.", step, self.best_metric, value)
      return False
    best = self.best_value()
    if best is not None and not value > best:
      return False
    for stale in [s for s in self.best.all_steps() if s >= step]:
      logging.warning(
        "replacing %s/%d of an interrupted run: step %d's %s %.4f beats it.",
        self.best.directory,
        stale,
        step,
        self.best_metric,
        value,
      )
      self.best.delete(stale)
    self._save(
      self.best,
      step,
      ocp.args.Composite(**{MODEL_ITEM: ocp.args.StandardSave(self._model_item(state))}),
      metrics={self.best_metric: value},
    )
    self._best_value = value
    logging.info("best %s so far: %.4f at step %d", self.best_metric, value, step)
    return True

  def close(self) -> None:
    """Waits for pending saves and releases both managers."""
    for manager in (self.latest, self.best):
      manager.wait_until_finished()
      manager.close()


def save_inference_checkpoint(
  directory: str,
  *,
  variables: dict[str, Any],
  config: ml_collections.ConfigDict,
  step: int = 0,
) -> str:
  """Writes ``config.json`` and ``checkpoints/<step>/model``; returns the directory.

  Args:
    directory: output directory (created).
    variables: ``{"params": ..., "batch_stats": ...}`` of the SDPAL model.
    config: must contain ``model`` and ``preprocess`` ConfigDicts.
    step: the step number to record.
  """
  for name in ("model", "preprocess"):
    if name not in config:
      raise CheckpointError(f"config has no '{name}' section; cannot save a usable checkpoint.")
  write_config(directory, config)
  manager = checkpoint_manager(os.path.join(directory, LATEST_DIR))
  manager.save(step, args=ocp.args.Composite(**{MODEL_ITEM: ocp.args.StandardSave(variables)}))
  manager.wait_until_finished()
  manager.close()
  return directory


def find_model_steps(directory: str, step: int | None = None) -> tuple[str, int] | None:
  """(manager directory, step) to load: ``step`` where it is saved, else best, else latest."""
  for sub in (BEST_DIR, LATEST_DIR) if step is None else (LATEST_DIR, BEST_DIR):
    path = os.path.abspath(os.path.join(directory, sub))
    if not os.path.isdir(path):
      continue
    steps = ocp.utils.checkpoint_steps(path)
    if step is not None and step in steps:
      return path, step
    if step is None and steps:
      return path, max(steps)
  return None


def saved_steps(directory: str) -> list[int]:
  """Every step saved in ``directory``'s ``checkpoints/`` and ``best/``, ascending."""
  steps: set[int] = set()
  for sub in (BEST_DIR, LATEST_DIR):
    path = os.path.abspath(os.path.join(directory, sub))
    if os.path.isdir(path):
      steps.update(ocp.utils.checkpoint_steps(path))
  return sorted(steps)


def load_inference_checkpoint(directory: str, step: int | None = None) -> InferenceCheckpoint:
  """Loads variables and configs from a checkpoint directory (see module doc).

  ``step``: that saved step instead of best-else-latest.
  """
  directory = resolve_directory(directory)
  if not os.path.isdir(directory):
    raise CheckpointError(f"{directory}: no such checkpoint directory.")
  if is_ensemble(directory):
    raise CheckpointError(
      f"{directory} is an ensemble of {len(ensemble_members(directory))} checkpoints: load it "
      "with sdpal_jax.inference.Predictor.from_checkpoint, or load each of its members."
    )
  config = read_config(directory)
  found = find_model_steps(directory, step)
  if found is None:
    if step is not None:
      raise CheckpointError(
        f"{directory}: no step {step}; saved steps: {saved_steps(directory) or 'none'}."
      )
    raise CheckpointError(
      f"{directory}: no finished checkpoint step under {BEST_DIR}/ or {LATEST_DIR}/."
    )
  path, step = found
  manager = checkpoint_manager(path, max_to_keep=None)
  try:
    restored = manager.restore(
      step, args=ocp.args.Composite(**{MODEL_ITEM: ocp.args.StandardRestore()})
    )
  except Exception as e:  # orbax raises many types; name the file for the user.
    raise CheckpointError(f"{path}/{step}: cannot restore the model weights ({e}).") from e
  finally:
    manager.close()
  model_config_lib.validate_model_config(config.model)
  model_config_lib.validate_preprocess_config(config.preprocess)
  return InferenceCheckpoint(
    variables=_widen_half_precision(dict(restored[MODEL_ITEM])),
    model_config=config.model,
    preprocess_config=config.preprocess,
    step=int(step),
    config=config,
    path=directory,
  )
