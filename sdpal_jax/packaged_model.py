"""The model that ships inside the package, and the tool that packages a trained one.

``sdpal-predict photo.jpg`` with no ``--checkpoint`` (and ``Predictor.from_checkpoint()``,
``sdpal-evaluate --workdir default``) uses ``sdpal_jax/default_model/``: an
ordinary inference checkpoint directory (``config.json`` + orbax
``checkpoints/<step>/``) whose floating-point arrays are stored in the
smallest of ``STORAGE_PLANS`` that changes no probability by more than
``MAX_STORAGE_ERROR`` (``checkpoint.load_inference_checkpoint`` widens float16
back to float32), and ``provenance.json``: the recipe (packaged config name,
the exact command, dataset and version, steps), the machine and commit it was
trained on, a checksum of the weights and what they score on the generated
test split, so a user can tell exactly what model they are running and a test
can check that the packaged files still give the recorded numbers.

Packaging a trained workdir, then recording its real-archive scores::

  python -m sdpal_jax.packaged_model --workdir W --output_dir sdpal_jax/default_model \\
    --command "python -m sdpal_jax.train --config default_model --workdir W" \\
    --commit <git commit of the training code> [--training_note "..."]
  sdpal-evaluate --workdir default --datasets casia_v1:test,coverage:test --protocol all \\
    --output_dir OUT
  python -m sdpal_jax.packaged_model --output_dir sdpal_jax/default_model \\
    --real_data OUT/results.json --real_data_command "sdpal-evaluate ..." [--real_data_note "..."]

An ensemble (the mean of several networks' probability maps) is packaged from
models packaged as above, each keeping its own provenance::

  python -m sdpal_jax.packaged_model --output_dir sdpal_jax/default_model \
    --members bundled_photos=PACKAGED_A,kodak_photos=PACKAGED_B

It holds ``ensemble.json`` and ``members/<name>/`` (``sdpal_jax.checkpoint``);
its ``provenance.json`` names the members and their recipes, a checksum over
theirs, and what the mean map scores on the generated test split.

``--real_data`` takes the ``results.json`` that ``sdpal-evaluate --protocol all``
wrote and records its headline numbers as ``provenance.json``'s ``real_data``
(``real_data_summary``). Packaging writes a new provenance, so a repackaged
model never carries the previous model's real-archive scores.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import flags

from sdpal_jax import checkpoint as checkpoint_lib
from sdpal_jax import cli
from sdpal_jax.datasets import synthetic_forgery
from sdpal_jax.errors import SdpalError
from sdpal_jax.evaluator import Evaluator
from sdpal_jax.image_io import load_image
from sdpal_jax.inference import Predictor

PROVENANCE_FILE = "provenance.json"
# Storage plans tried in order, smallest first: the first whose probabilities on the
# generated test split stay within MAX_STORAGE_ERROR of the float32 model's is packaged
# (and recorded in provenance.json). Each names the fewest values an array must hold to
# be stored as float16; smaller arrays stay float32, and None keeps every array float32
# (exact). Rounding error adds up over the many small arrays (convolution stems, batch
# statistics) while the few large ones (the deep stages) hold most of the bytes: for the
# packaged SRM model all-float16 moved a probability by 4.3e-3, float16 only for its 12
# arrays of >= 65536 values (83 % of the values) by 7.7e-4 at 60 % of the float32 size.
STORAGE_PLANS = {"float16": 0, "float16_large_arrays": 2**16, "float32": None}
MAX_STORAGE_ERROR = 1e-3
# The generated split the packaged numbers are recorded on: the quickstart's
# test split (mixed_large shares it; mixed_large_unwarped, the packaged model's data, has
# its own), 150 images of 128x128: the same images for every packaged model.
RECORD_DATASET = "synthetic_forgery/mixed_small"
RECORD_SPLIT = "test"


def variables_checksum(variables: dict[str, Any]) -> str:
  """SHA-256 over every array of ``variables`` (path, dtype, shape and bytes, paths sorted)."""
  digest = hashlib.sha256()
  flat = jax.tree_util.tree_flatten_with_path(variables)[0]
  for path, leaf in sorted(flat, key=lambda item: jax.tree_util.keystr(item[0])):
    array = np.ascontiguousarray(np.asarray(leaf))
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


def to_storage(variables: dict[str, Any], float16_from: int | None = 0) -> dict[str, Any]:
  """The packaged form: floating-point arrays of >= ``float16_from`` values as float16.

  Smaller floating-point arrays (every one when ``float16_from`` is None) stay
  float32; other arrays are unchanged.
  """

  def narrow(leaf):
    array = np.asarray(leaf)
    if not np.issubdtype(array.dtype, np.floating):
      return array
    if float16_from is not None and array.size >= float16_from:
      return array.astype(np.float16)
    return array.astype(np.float32)

  return jax.tree.map(narrow, variables)


def generated_items(dataset: str = RECORD_DATASET, split: str = RECORD_SPLIT) -> Iterator[dict]:
  """The examples of a bundled-photo ``synthetic_forgery`` split, made in memory.

  The same images (bit for bit) as the tfds build of that split, without
  building it: each example is a pure function of (config, split, index).
  Yields the ``Evaluator`` item dicts ``{"image", "mask", "tampered", "name"}``.
  """

  name = dataset.split("/", 1)[1]
  config = next(c for c in synthetic_forgery.SyntheticForgery.BUILDER_CONFIGS if c.name == name)
  photos = [load_image(p) for p in synthetic_forgery.source_photo_paths()]
  count = {"train": config.num_train, "validation": config.num_validation, "test": config.num_test}
  for index in range(count[split]):
    image, mask, manipulation = synthetic_forgery.make_example(photos, split, index, config)
    yield {
      "image": image,
      "mask": mask[..., 0],
      "tampered": manipulation != "authentic",
      "name": f"{split}_{index:05d}",
    }


def score_generated_split(predictor, protocol: str = "all") -> dict[str, Any]:
  """``predictor``'s metrics on the recorded generated split (``Evaluator``, native size)."""

  items = list(generated_items())
  evaluator = Evaluator((f"{RECORD_DATASET}:{RECORD_SPLIT}", items), protocol=protocol)
  return evaluator.run(predictor)


def cpu_model() -> str:
  """The CPU's model name as ``lscpu`` prints it (from /proc/cpuinfo), else ``platform``'s."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _hardware() -> dict[str, Any]:
  """This machine, as provenance records it: CPU model, core count, JAX version."""
  return {"cpu": cpu_model(), "cores": os.cpu_count(), "jax": jax.__version__}


def _extra_json(path: str | None) -> dict[str, Any]:
  """The object in ``--extra_json``'s file (added to provenance.json), or {} without one."""
  if not path:
    return {}
  with open(path) as f:
    return dict(json.load(f))


def package_model(
  workdir: str,
  output_dir: str,
  *,
  command: str,
  commit: str,
  step: int | None = None,
  tile_size: int | None = None,
  extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
  """Writes ``workdir``'s model (best step, or ``step``) to ``output_dir`` in packaged form.

  Stores in the first of ``STORAGE_PLANS`` that changes no probability of the recorded
  generated split by more than ``MAX_STORAGE_ERROR``, scores that split with
  the stored weights and writes ``provenance.json``; returns its contents.
  Its ``hardware`` is this machine's: package on the machine that trained.
  ``tile_size``: the packaged ``preprocess.tile_size`` (prediction only, so it can
  be set for weights trained before the recipe named it); None keeps the workdir's.
  """

  loaded = checkpoint_lib.load_inference_checkpoint(workdir, step=step)
  if tile_size is not None:
    loaded.config.preprocess.tile_size = tile_size
  full = Predictor.from_checkpoint(workdir, step=loaded.step, tile_size=tile_size)
  images = np.stack([item["image"] for item in generated_items()])
  reference = full.predict_probabilities(images)
  errors = {}
  for storage, float16_from in STORAGE_PLANS.items():
    if os.path.exists(output_dir):
      shutil.rmtree(output_dir)
    checkpoint_lib.save_inference_checkpoint(
      output_dir, variables=to_storage(loaded.variables, float16_from), config=loaded.config,
      step=loaded.step,
    )  # fmt: skip
    packaged = Predictor.from_checkpoint(output_dir)
    storage_error = float(np.max(np.abs(reference - packaged.predict_probabilities(images))))
    errors[storage] = storage_error
    if storage_error <= MAX_STORAGE_ERROR:
      break
  else:
    shutil.rmtree(output_dir)
    raise SdpalError(
      f"storage changes probabilities by more than {MAX_STORAGE_ERROR} under every storage "
      f"plan ({errors}); not packaged."
    )
  scores = score_generated_split(packaged)
  size = _weights_size(output_dir)
  config = loaded.config
  provenance = {
    "config": "default_model",
    "command": command,
    "commit": commit,
    "dataset": config.data.dataset,
    "dataset_version": _dataset_version(config.data.dataset),
    "num_train_steps": int(config.num_train_steps),
    "step": loaded.step,
    "hardware": _hardware(),
    "storage": storage,
    "storage_float16_from_values": float16_from,
    "storage_max_probability_change": storage_error,
    "storage_max_probability_change_by_plan": errors,  # every plan tried
    "checksum_sha256": variables_checksum(packaged.variables),
    "size_bytes": size,
    "recorded": {
      "dataset": f"{RECORD_DATASET}:{RECORD_SPLIT}",
      "resolution": "native",
      "scores": _jsonable(scores),
    },
    **(extra or {}),
  }
  _write_provenance(output_dir, provenance)
  return provenance


MEMBERS_DIR = "members"
# Provenance fields each member's entry in an ensemble's provenance repeats.
MEMBER_FIELDS = ("command", "commit", "dataset", "dataset_version", "step", "checksum_sha256")


def package_ensemble(
  members: dict[str, str], output_dir: str, *, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
  """Writes the ensemble of the packaged models ``members`` ({name: dir}) to ``output_dir``.

  Each member is copied whole (weights, config and its own provenance) to
  ``output_dir/members/<name>``; the ensemble is written beside ``output_dir``
  first and renamed over it when complete, so an interrupted call leaves the
  previous model. Scores the mean map on the recorded generated split and
  writes ``provenance.json``; returns its contents.

  Raises:
    SdpalError: a member that is not a packaged model, a name that is not a
      plain folder name, or members that preprocess photos differently.
  """
  if not members:
    raise SdpalError("--members: name at least one packaged model (NAME=DIR).")
  for name in members:
    if not name or not name.replace("_", "").replace("-", "").isalnum():
      raise SdpalError(f"--members: {name!r} is not a plain folder name (letters, digits, _ -).")
  member_provenance = {name: read_provenance(path) for name, path in members.items()}
  for name, path in members.items():
    if checkpoint_lib.is_ensemble(path):
      raise SdpalError(f"--members {name}={path}: an ensemble; name its members instead.")
  output_dir = os.path.abspath(output_dir)
  staging = output_dir + ".partial"
  if os.path.exists(staging):
    shutil.rmtree(staging)
  relative = []
  for name, path in members.items():
    relative.append(f"{MEMBERS_DIR}/{name}")
    shutil.copytree(checkpoint_lib.resolve_directory(path), os.path.join(staging, relative[-1]))
  checkpoint_lib.write_ensemble(staging, relative)
  try:
    ensemble = Predictor.from_checkpoint(staging)
  except SdpalError:
    shutil.rmtree(staging)
    raise
  scores = score_generated_split(ensemble)
  checksums = [member_provenance[name]["checksum_sha256"] for name in members]
  provenance = {
    "ensemble": {
      "combine": "the mean of the members' probability maps",
      "members": {
        name: {
          "folder": folder,
          **{f: member_provenance[name].get(f) for f in MEMBER_FIELDS},
        }
        for name, folder in zip(members, relative, strict=True)
      },
    },
    "hardware": _hardware(),
    "checksum_sha256": hashlib.sha256("".join(checksums).encode()).hexdigest(),
    "size_bytes": _weights_size(staging),
    "recorded": {
      "dataset": f"{RECORD_DATASET}:{RECORD_SPLIT}",
      "resolution": "native",
      "scores": _jsonable(scores),
    },
    **(extra or {}),
  }
  _write_provenance(staging, provenance)
  previous = output_dir + ".previous"
  if os.path.exists(output_dir):
    if os.path.exists(previous):
      shutil.rmtree(previous)
    os.replace(output_dir, previous)
  os.replace(staging, output_dir)
  if os.path.exists(previous):
    shutil.rmtree(previous)
  return provenance


def _weights_size(directory: str) -> int:
  """Bytes of every file under ``directory`` except its own ``provenance.json``."""
  top = os.path.join(directory, PROVENANCE_FILE)
  return sum(
    os.path.getsize(os.path.join(folder, name))
    for folder, _, names in os.walk(directory)
    for name in names
    if os.path.join(folder, name) != top
  )


def prediction_config(directory: str):
  """The config that says how ``directory``'s model sees photos (an ensemble's first member's)."""
  if checkpoint_lib.is_ensemble(directory):
    directory = checkpoint_lib.ensemble_members(directory)[0]
  return checkpoint_lib.read_config(directory)


NATIVE = "native (every photo at its own size)"


def prediction_resolution(config) -> str:
  """How a checkpoint's config has photos predicted: ``NATIVE`` or ``resized to HxW``."""
  size = config.preprocess.get("image_size")
  return NATIVE if size is None else f"resized to {size[0]}x{size[1]}"


# The numbers ``real_data`` keeps of each dataset's scores, by protocol (sdpal-evaluate's names).
REAL_DATA_FIELDS = {
  "dataset_protocol": ("pixel_auc", "pixel_f1", "pixel_auc_centre_controlled"),
  "image_protocol": ("pixel_auc", "pixel_f1_tampered"),
  "best_protocol": ("pixel_f1",),
}


def real_data_summary(
  results: dict[str, Any], command: str, note: str | None = None, *, resolution: str = NATIVE
) -> dict:
  """The ``real_data`` block of ``provenance.json`` from ``sdpal-evaluate``'s ``results.json``.

  ``results``: ``{"casia_v1:test": scores, ...}`` as ``--protocol all`` writes it
  (each dataset's ``protocols`` holds ``dataset``, ``image`` and ``best``).
  ``resolution``: what the model saw of each photo (``prediction_resolution``).
  Keeps, per dataset, the images scored and ``REAL_DATA_FIELDS``; raises
  ``SdpalError`` naming the dataset and protocol when one is missing (scored
  with another ``--protocol``).
  """
  if not results:
    raise SdpalError("real-data results: no dataset in the results file.")
  scores = {}
  for dataset, result in results.items():
    protocols = result.get("protocols", {})
    summary: dict[str, Any] = {"num_scored": int(result.get("num_scored", 0))}
    for key, fields in REAL_DATA_FIELDS.items():
      protocol = key.removesuffix("_protocol")
      if protocol not in protocols:
        raise SdpalError(
          f"real-data results: {dataset} has no '{protocol}' protocol (it has "
          f"{sorted(protocols) or 'none'}); score it with sdpal-evaluate --protocol all."
        )
      summary[key] = {f: float(protocols[protocol][f]) for f in fields}
    scores[dataset] = summary
  block: dict[str, Any] = {
    "resolution": resolution,
    "command": command,
    "scores": scores,
  }
  if note:
    block["note"] = note
  return block


def _write_provenance(directory: str, provenance: dict[str, Any]) -> None:
  """Writes ``provenance.json`` whole: beside its place first, then renamed over it."""
  path = os.path.join(directory, PROVENANCE_FILE)
  with open(path + ".tmp", "w") as f:
    json.dump(provenance, f, indent=2)
    f.write("\n")
  os.replace(path + ".tmp", path)


def read_provenance(directory: str = checkpoint_lib.DEFAULT_MODEL_DIR) -> dict[str, Any]:
  """The packaged model's ``provenance.json``."""
  path = os.path.join(directory, PROVENANCE_FILE)
  if not os.path.isfile(path):
    raise SdpalError(f"{path}: no provenance file; {directory} is not a packaged model.")
  with open(path) as f:
    return json.load(f)


def _dataset_version(dataset: str) -> str:
  return str(tfds.builder(dataset).version)


def _jsonable(value):
  if isinstance(value, dict):
    return {k: _jsonable(v) for k, v in value.items() if not isinstance(v, np.ndarray)}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, (np.floating, np.integer)):
    return value.item()
  return value


def _define_flags() -> None:
  flags.DEFINE_string(
    "workdir",
    None,
    "The training workdir to package; without it, --real_data is recorded in the model "
    "already packaged in --output_dir.",
  )
  flags.DEFINE_string("output_dir", None, "Where to write the packaged model.")
  flags.DEFINE_list(
    "members",
    None,
    "NAME=DIR,...: package the ensemble (mean map) of these packaged models instead of --workdir.",
  )
  flags.DEFINE_integer("step", None, "Package this saved step instead of the best one.")
  flags.DEFINE_string("command", None, "The exact command that trained the workdir.")
  flags.DEFINE_string("commit", None, "The git commit of the code that trained it.")
  flags.DEFINE_integer(
    "tile_size",
    None,
    "The packaged preprocess.tile_size (prediction only); default: the workdir's.",
  )
  flags.DEFINE_string(
    "real_data",
    None,
    "sdpal-evaluate's results.json (--protocol all) for these weights on real archives: "
    "recorded as provenance.json's real_data.",
  )
  flags.DEFINE_string("real_data_command", None, "The sdpal-evaluate command that wrote it.")
  flags.DEFINE_string("real_data_note", None, "How the real-data scores were chosen or read.")
  flags.DEFINE_string("training_note", None, "The training run's wall time, machine load, etc.")
  flags.DEFINE_string("extra_json", None, "A JSON file whose object is added to provenance.json.")
  flags.mark_flags_as_required(["output_dir"])


def _read_results(path: str) -> dict[str, Any]:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise SdpalError(f"--real_data {path}: not a readable JSON file ({e}).") from None


def record_real_data(directory: str, real_data: dict[str, Any]) -> dict[str, Any]:
  """Sets ``real_data`` in the packaged model ``directory``'s provenance; returns it.

  The file is replaced whole (``_write_provenance``), so an interrupted call
  leaves the old provenance.
  """
  provenance = read_provenance(directory)
  provenance["real_data"] = real_data
  _write_provenance(directory, provenance)
  return provenance


def main(argv) -> int:
  del argv
  FLAGS = flags.FLAGS
  if FLAGS.members:
    if FLAGS.workdir or FLAGS.real_data:
      raise SdpalError(
        "--members packages an ensemble on its own: no --workdir, and record --real_data "
        "in it afterwards (--output_dir DIR --real_data ...)."
      )
    members = {}
    for item in FLAGS.members:
      name, sep, path = item.partition("=")
      if not sep or not path or name in members:
        raise SdpalError(f"--members: {item!r}; expected distinct NAME=DIR entries.")
      members[name] = path
    provenance = package_ensemble(members, FLAGS.output_dir, extra=_extra_json(FLAGS.extra_json))
    scores = provenance["recorded"]["scores"]
    print(
      f"packaged the mean of {', '.join(members)} to {FLAGS.output_dir}: "
      f"{provenance['size_bytes']} bytes, {provenance['recorded']['dataset']} pixel AUC "
      f"{scores['pixel_auc']:.4f} F1 {scores['pixel_f1']:.4f}"
    )
    print(
      "no real-archive scores yet: score the ensemble (sdpal-evaluate --workdir "
      f"{FLAGS.output_dir} --protocol all ...) and record them with --real_data."
    )
    return 0
  real_data = None
  if FLAGS.real_data:
    if not FLAGS.real_data_command:
      raise SdpalError("--real_data needs --real_data_command: the command that scored it.")
    if FLAGS.workdir is None:
      read_provenance(FLAGS.output_dir)  # a packaged model, or an error that says it is not
    scored = FLAGS.workdir or FLAGS.output_dir
    real_data = real_data_summary(
      _read_results(FLAGS.real_data), FLAGS.real_data_command, FLAGS.real_data_note,
      resolution=prediction_resolution(prediction_config(scored)),
    )  # fmt: skip
  if FLAGS.workdir is None:  # record scores of the model already packaged in output_dir
    if real_data is None:
      raise SdpalError(
        "give --workdir (with --command and --commit) to package a trained model, or "
        "--real_data to record real-archive scores of the model packaged in --output_dir."
      )
    record_real_data(FLAGS.output_dir, real_data)
    print(f"recorded real-data scores of {', '.join(real_data['scores'])} in {FLAGS.output_dir}")
    return 0
  missing = [f"--{name}" for name in ("command", "commit") if not FLAGS[name].value]
  if missing:
    raise SdpalError(f"packaging --workdir {FLAGS.workdir} needs {' and '.join(missing)}.")
  extra = _extra_json(FLAGS.extra_json)
  if FLAGS.training_note:
    extra["training_note"] = FLAGS.training_note
  if real_data is not None:
    extra["real_data"] = real_data
  provenance = package_model(
    FLAGS.workdir,
    FLAGS.output_dir,
    command=FLAGS.command,
    commit=FLAGS.commit,
    step=FLAGS.step,
    tile_size=FLAGS.tile_size,
    extra=extra,
  )
  dataset_scores = provenance["recorded"]["scores"]
  print(
    f"packaged step {provenance['step']} to {FLAGS.output_dir}: {provenance['size_bytes']} bytes, "
    f"sha256 {provenance['checksum_sha256'][:16]}..., "
    f"{provenance['recorded']['dataset']} pixel AUC {dataset_scores['pixel_auc']:.4f} "
    f"F1 {dataset_scores['pixel_f1']:.4f}"
  )
  if real_data is None:
    print(
      "no --real_data: provenance.json has no real-archive scores; score the packaged files "
      "(sdpal-evaluate --workdir default --protocol all ...) and record them with "
      f"--output_dir {FLAGS.output_dir} --real_data OUT/results.json --real_data_command ..."
    )
  return 0


def run_main() -> None:
  """Console entry point (``python -m sdpal_jax.packaged_model``)."""
  cli.run(main, _define_flags)


if __name__ == "__main__":
  run_main()
