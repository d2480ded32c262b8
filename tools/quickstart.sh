#!/usr/bin/env bash
# The main job on the embedded default: train the quickstart model on the
# locally generated synthetic_forgery set, evaluate it on its test split, and
# predict one real photo.  Usage: bash tools/quickstart.sh [PYTHON] [WORKDIR]
set -euo pipefail
PY="${1:-python3}"
WORKDIR="${2:-workdir/quickstart}"
cd "$(dirname "$0")/.."

"$PY" -m sdpal_jax.train --config quickstart --workdir "$WORKDIR"
# The test split of the dataset the run trained on, as its workdir's config.json names it.
DATASET="$("$PY" -c 'import sys; from sdpal_jax import checkpoint; print(checkpoint.read_config(sys.argv[1]).data.dataset)' "$WORKDIR")"
# --baselines centre: the row of a map with no model ("the middle is tampered"), to read the model's against.
"$PY" -m sdpal_jax.evaluate --workdir "$WORKDIR" --baselines centre \
  --datasets "$DATASET:test" --output_dir "$WORKDIR/eval"
PHOTO="$("$PY" -c 'import os, skimage; print(os.path.join(os.path.dirname(skimage.__file__), "data", "astronaut.png"))')"
"$PY" -m sdpal_jax.predict --checkpoint "$WORKDIR" --output_dir "$WORKDIR/predictions" "$PHOTO"
echo "results: $WORKDIR/eval/results.md, predictions: $WORKDIR/predictions"
