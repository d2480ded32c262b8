r"""Tampering heat-maps for photos: ``python -m sdpal_jax.predict``.

  sdpal-predict photo.jpg                       # the packaged model, into ./sdpal_predictions
  python -m sdpal_jax.predict --checkpoint DIR --output_dir OUT IMAGE_OR_DIR...

For each photo ``STEM.ext`` it writes, at the photo's own resolution:
``STEM_prob.npy`` (float32 H x W probabilities), ``STEM_mask.png`` (0/255 at
the threshold), ``STEM_overlay.png`` (the photo with tampered pixels tinted
red), and one ``OUT/summary.json`` with an image-level score per photo and
the files that could not be read; one line per photo on stdout (its score
and the share of pixels above the threshold). ``--output_dir`` defaults to
``sdpal_predictions`` in the current folder.

Exit status: 0 when every photo was processed, 1 when some were skipped
(each is named on stderr and in summary.json), 2 when nothing could be done.
A probability map that is not finite (NaN or infinite values: a diverged
model) stops the command at that photo with status 2: it names the photo and
the checkpoint step, summary.json lists the photos done before it and that
photo under "skipped", and no mask, overlay or score is written for it.
``--step N`` predicts with saved step N instead of the best (else latest) one
(an ensemble directory, such as the packaged model, has no steps).
``--flip_average`` averages each map with that of the mirrored photo.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence

import numpy as np
from absl import flags, logging
from PIL import Image

from sdpal_jax import cli
from sdpal_jax.errors import ConfigError, SdpalError
from sdpal_jax.figures import overlay
from sdpal_jax.image_io import IMAGE_EXTENSIONS, load_image
from sdpal_jax.inference import Predictor
from sdpal_jax.metrics import NonFiniteScoresError, detection_score, require_finite
from sdpal_jax.reporting import make_output_dir, unique_names


def collect_images(inputs: Iterable[str]) -> tuple[list[str], list[tuple[str, str]]]:
  """Expands files and folders (non-recursive, sorted) into image paths.

  Returns:
    (paths, problems): problems are (path, reason) for inputs that do not exist
    or folders without images.
  """
  paths, problems = [], []
  for item in inputs:
    if os.path.isdir(item):
      found = sorted(
        os.path.join(item, name)
        for name in os.listdir(item)
        if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(item, name))
      )
      if not found:
        problems.append((item, f"folder has no images ({', '.join(IMAGE_EXTENSIONS)})"))
      paths.extend(found)
    elif os.path.isfile(item):
      paths.append(item)
    else:
      problems.append((item, "no such file or folder"))
  return paths, problems


DEFAULT_OUTPUT_DIR = "sdpal_predictions"


class NonFiniteMapError(SdpalError):
  """The model gave a probability map with NaN or infinite values."""


def _model_source(predictor) -> str:
  """``DIR (step N)`` for a predictor loaded from a checkpoint, else ``the model``."""
  checkpoint = getattr(predictor, "checkpoint", None)
  if checkpoint is None:
    return "the model"
  step = getattr(predictor, "step", None)
  return f"{checkpoint} (step {step})" if step is not None else str(checkpoint)


def _write_summary(output_dir: str, summary: dict) -> None:
  tmp = os.path.join(output_dir, "summary.json.tmp")
  with open(tmp, "w") as f:
    json.dump(summary, f, indent=2, allow_nan=False)  # strict JSON: a NaN here is a bug
  os.replace(tmp, os.path.join(output_dir, "summary.json"))


def predict_files(
  predictor,
  paths: Sequence[str],
  output_dir: str,
  *,
  threshold: float = 0.5,
  already_skipped: Sequence[tuple[str, str]] = (),
  echo: bool = False,
) -> dict:
  """Runs ``predictor`` on every path; writes the outputs; returns the summary dict.

  ``already_skipped``: (path, reason) of inputs rejected before reading, listed
  in summary.json with the unreadable files. ``echo``: print one line per
  photo to stdout (its score, the share of pixels above ``threshold`` and
  where its overlay went), as the command does.

  Raises:
    NonFiniteMapError: at the first photo whose map holds NaN or infinite
      values, after writing summary.json (that photo under "skipped"): a model
      that gives one such map is not to be trusted with the others.
  """
  if not 0.0 <= float(threshold) < 1.0:
    raise ConfigError(f"--threshold={threshold}; must be in [0, 1).")
  make_output_dir(output_dir)
  results = []
  skipped = [{"file": p, "reason": r} for p, r in already_skipped]
  stems = unique_names([os.path.splitext(os.path.basename(p))[0] for p in paths])
  for path, stem in zip(paths, stems, strict=True):
    try:
      image = load_image(path)
    except SdpalError as e:
      logging.error("skipping %s", e)
      print(f"skipped: {e}", file=sys.stderr)
      skipped.append({"file": path, "reason": getattr(e, "reason", str(e))})
      continue
    prob = predictor.predict_image(image)
    try:
      require_finite(prob)
    except NonFiniteScoresError as e:
      reason = (
        f"the probability map holds {e.num_nan} NaN and {e.num_inf} infinite values "
        f"of {e.size} pixels"
      )
      skipped.append({"file": path, "reason": reason})
      _write_summary(output_dir, _summary(threshold, results, skipped))
      raise NonFiniteMapError(
        f"{path}: {reason}; stopped there: {_model_source(predictor)} gives no usable map "
        "(a diverged run?); pick another saved step with --step."
      ) from None
    tampered = prob > threshold
    overlay_path = os.path.join(output_dir, f"{stem}_overlay.png")
    np.save(os.path.join(output_dir, f"{stem}_prob.npy"), prob.astype(np.float32))
    Image.fromarray(tampered.astype(np.uint8) * 255).save(
      os.path.join(output_dir, f"{stem}_mask.png")
    )
    Image.fromarray(overlay(image, prob)).save(overlay_path)
    result = {
      "file": path,
      "stem": stem,
      "height": int(image.shape[0]),
      "width": int(image.shape[1]),
      "score": detection_score(prob),
      "tampered_fraction": float(np.mean(tampered)),
      "max_probability": float(prob.max()),
    }
    results.append(result)
    if echo:
      print(
        f"{path}: score {result['score']:.2f}, {100 * result['tampered_fraction']:.1f}% of "
        f"pixels above {threshold:g} -> {overlay_path}"
      )
  summary = _summary(threshold, results, skipped)
  _write_summary(output_dir, summary)
  return summary


def _summary(threshold: float, results: list[dict], skipped: list[dict]) -> dict:
  return {
    "threshold": threshold,
    "score": "mean of the top 1% pixel probabilities",
    "images": results,
    "skipped": skipped,
  }


def _define_flags() -> None:
  flags.DEFINE_string(
    "checkpoint",
    "default",
    "Checkpoint directory (training workdir or converted); 'default': the model packaged with "
    "the library (trained on generated forgeries only; see its provenance.json).",
  )
  flags.DEFINE_integer(
    "step", None, "Predict with this saved step of --checkpoint (default: best, else latest)."
  )
  flags.DEFINE_string(
    "output_dir", DEFAULT_OUTPUT_DIR, "Where to write the maps and summary.json (created)."
  )
  flags.DEFINE_float("threshold", 0.5, "Probability above which a pixel counts as tampered.")
  flags.DEFINE_bool(
    "full_resolution",
    False,
    "Feed photos at their own size instead of the checkpoint's input size.",
  )
  flags.DEFINE_integer(
    "tile_size",
    None,
    "With --full_resolution: photos larger than this are predicted in tiles (0: never; default: "
    "the checkpoint's preprocess.tile_size, else 2048).",
  )
  flags.DEFINE_integer(
    "tile_overlap", None, "Pixels shared by neighbouring tiles (default tile_size/8)."
  )
  flags.DEFINE_bool(
    "flip_average",
    False,
    "Average each map with that of the left-right mirrored photo: twice the time, usually a "
    "slightly better map (docs/results/real_data).",
  )
  flags.DEFINE_enum(
    "walk_method",
    None,
    ["dense", "blocked", "sampled"],
    "Override the random-walk method (default: the checkpoint's; 'sampled' with --full_resolution).",
  )


def main(argv: Sequence[str]) -> int:
  FLAGS = flags.FLAGS
  inputs = list(argv[1:])
  if not inputs:
    raise SdpalError(
      "no photo given: sdpal-predict [--checkpoint DIR] [--output_dir OUT] IMAGE_OR_DIR..."
    )
  if not 0.0 <= FLAGS.threshold < 1.0:
    raise ConfigError(f"--threshold={FLAGS.threshold}; must be in [0, 1).")
  if FLAGS.step is not None and FLAGS.step < 0:
    raise ConfigError(f"--step={FLAGS.step}; expected a saved step number (>= 0).")
  make_output_dir(FLAGS.output_dir)
  paths, problems = collect_images(inputs)
  for path, reason in problems:
    print(f"skipped: {path}: {reason}", file=sys.stderr)
  if not paths:
    print("no images to process.", file=sys.stderr)
    return 2
  overrides = {"walk_method": FLAGS.walk_method} if FLAGS.walk_method else {}
  predictor = Predictor.from_checkpoint(
    FLAGS.checkpoint,
    step=FLAGS.step,
    full_resolution=FLAGS.full_resolution,
    tile_size=FLAGS.tile_size,
    tile_overlap=FLAGS.tile_overlap,
    flip_average=FLAGS.flip_average,
    **overrides,
  )
  summary = predict_files(
    predictor,
    paths,
    FLAGS.output_dir,
    threshold=FLAGS.threshold,
    already_skipped=problems,
    echo=True,
  )
  n_ok, n_bad = len(summary["images"]), len(summary["skipped"])
  print(f"wrote {n_ok} prediction(s) to {FLAGS.output_dir}; skipped {n_bad}.")
  if n_ok == 0:
    return 2
  return 1 if n_bad else 0


def run_main() -> None:
  """Console entry point (``sdpal-predict``)."""
  cli.run(main, _define_flags)


if __name__ == "__main__":
  run_main()
