r"""Averages the weights of several saved steps of one training run into a new checkpoint.

  # the mean of the last 5 saved steps of a run -> a directory predict/evaluate accept
  sdpal-average --workdir RUN --steps last:5 --output_dir RUN_AVG
  sdpal-average --workdir RUN --steps 4800,5600,6400 --output_dir RUN_AVG
  #   (also: python -m sdpal_jax.average ...)

Averaging the weights of late checkpoints of one run finds a point in the middle
of the region the optimiser wanders through, which often generalises better than
any single step (stochastic weight averaging: Izmailov et al., "Averaging
Weights Leads to Wider Optima and Better Generalization", UAI 2018; the
checkpoints of one run are the cheapest "soup" of Wortsman et al., "Model
soups", ICML 2022). Whether it pays for a given run is measured, not assumed:
score the average like any checkpoint (``sdpal-evaluate --workdir RUN_AVG``).

Every array is the uniform mean, in float32, of the same array at each step.
That includes the batch-norm running means and variances: SWA recomputes those
with a pass over training data; the mean of the stored statistics is an
approximation that is exact when they barely move between the steps averaged.

The output holds ``config.json`` (the run's, with ``averaged_from`` naming the
run and the steps) and ``checkpoints/<last step>/model``; no optimiser state,
so it is for prediction and evaluation, not for resuming training. An existing
non-empty ``--output_dir`` is refused rather than overwritten.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import flags

from sdpal_jax import checkpoint, cli
from sdpal_jax.errors import CheckpointError, SdpalError


def average_variables(trees: Sequence[Any]) -> Any:
  """The leaf-by-leaf uniform mean of pytrees of the same structure and shapes.

  Args:
    trees: two or more pytrees (e.g. ``{"params": ..., "batch_stats": ...}``)
      with identical structure, leaf shapes and floating-point leaves.

  Returns:
    A pytree of that structure whose leaves are float32 numpy arrays.

  Raises:
    CheckpointError: fewer than one tree, or trees that differ in structure,
      shape, or hold a non-floating leaf.
  """
  if not trees:
    raise CheckpointError("nothing to average: no checkpoints given.")
  structure = jax.tree_util.tree_structure(trees[0])
  for i, tree in enumerate(trees[1:], start=1):
    if jax.tree_util.tree_structure(tree) != structure:
      raise CheckpointError(
        f"checkpoint {i} has different variables from checkpoint 0; only steps of one model "
        "can be averaged."
      )
  paths_and_leaves = [jax.tree_util.tree_flatten_with_path(tree)[0] for tree in trees]
  averaged = []
  for position, (path, _) in enumerate(paths_and_leaves[0]):
    name = jax.tree_util.keystr(path)
    leaves = [np.asarray(entries[position][1]) for entries in paths_and_leaves]
    if not np.issubdtype(leaves[0].dtype, np.floating):
      raise CheckpointError(f"{name}: a {leaves[0].dtype} array cannot be averaged.")
    shapes = {leaf.shape for leaf in leaves}
    if len(shapes) > 1:
      raise CheckpointError(f"{name}: shapes differ between checkpoints: {sorted(shapes)}.")
    total = np.zeros(leaves[0].shape, np.float64)
    for leaf in leaves:
      total += leaf
    averaged.append((total / len(leaves)).astype(np.float32))
  return jax.tree_util.tree_unflatten(structure, averaged)


def parse_steps(spec: str, available: Sequence[int]) -> list[int]:
  """``"last:K"`` or ``"A,B,C"`` -> ascending steps, each one of ``available``.

  Raises:
    SdpalError: a malformed spec, a step that is not saved, or fewer than two steps.
  """
  available = sorted(available)
  spec = spec.strip()
  if spec.startswith("last:"):
    try:
      count = int(spec[len("last:") :])
    except ValueError:
      raise SdpalError(f"--steps {spec!r}: 'last:' takes a whole number, e.g. last:5.") from None
    if count < 2 or count > len(available):
      raise SdpalError(
        f"--steps {spec!r}: need 2 to {len(available)} steps; saved steps: {available or 'none'}."
      )
    return available[-count:]
  try:
    steps = sorted({int(part) for part in spec.split(",") if part.strip()})
  except ValueError:
    raise SdpalError(f"--steps {spec!r}: give 'last:K' or steps like 4800,5600,6400.") from None
  missing = [s for s in steps if s not in available]
  if missing:
    raise SdpalError(f"--steps: {missing} not saved; saved steps: {available or 'none'}.")
  if len(steps) < 2:
    raise SdpalError(f"--steps {spec!r}: averaging needs at least two steps.")
  return steps


def average_checkpoints(workdir: str, steps: Sequence[int], output_dir: str) -> str:
  """Writes the mean of ``workdir``'s ``steps`` to ``output_dir``; returns ``output_dir``.

  Raises:
    CheckpointError: a step that cannot be read, steps whose model configs
      differ, or an ``output_dir`` that already holds files.
  """
  if os.path.isdir(output_dir) and os.listdir(output_dir):
    raise CheckpointError(f"{output_dir}: exists and is not empty; choose a new --output_dir.")
  loaded = [checkpoint.load_inference_checkpoint(workdir, step) for step in steps]
  first = loaded[0]
  for other in loaded[1:]:
    if other.model_config.to_dict() != first.model_config.to_dict():
      raise CheckpointError(
        f"{workdir}: steps {first.step} and {other.step} hold different model configs."
      )
  variables = average_variables([c.variables for c in loaded])
  config = ml_collections.ConfigDict(first.config.to_dict())
  config.averaged_from = {"workdir": os.path.abspath(workdir), "steps": [c.step for c in loaded]}
  return checkpoint.save_inference_checkpoint(
    output_dir, variables=variables, config=config, step=max(c.step for c in loaded)
  )


def _define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Training run (or checkpoint directory) to average.")
  flags.DEFINE_string(
    "steps", "last:5", "Which saved steps: 'last:K' (the K latest) or a list like 4800,5600,6400."
  )
  flags.DEFINE_string("output_dir", None, "New directory to write (must not hold files).")
  flags.mark_flags_as_required(["workdir", "output_dir"])


def main(argv: Sequence[str]) -> int:
  FLAGS = flags.FLAGS
  if len(argv) > 1:
    raise SdpalError(f"unexpected arguments {list(argv[1:])}; see --help.")
  workdir = checkpoint.resolve_directory(FLAGS.workdir)
  if not os.path.isdir(workdir):
    raise CheckpointError(f"{workdir}: no such checkpoint directory.")
  steps = parse_steps(FLAGS.steps, checkpoint.saved_steps(workdir))
  out = average_checkpoints(workdir, steps, FLAGS.output_dir)
  print(f"wrote {out}: the mean of steps {', '.join(map(str, steps))} of {workdir}")
  return 0


def run_main() -> None:
  """Console entry point (``sdpal-average``)."""
  cli.run(main, _define_flags)


if __name__ == "__main__":
  run_main()
