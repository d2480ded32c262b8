r"""Speed and memory of the correlation graph, the whole model and prediction per photo.

  python tools/benchmark.py --suite graph,model,predict --out bench_out \
      [--graph_sizes 32,64,128,256] [--methods dense,blocked,sampled] \
      [--model_sizes 256,512,1024] [--dtypes float32,bfloat16] [--batch 2 | 256:16,1024:1] \
      [--predict_checkpoints default] [--predict_sizes 384x256,1024x768,2048x1536] \
      [--torch_reference /path/to/SDPAL-checkout] \
      [--precompile_jobs 6] [--time_budget 420] [--memory_limit_gb 80]

Every configuration runs in a fresh subprocess, so peak memories do not mix:
``peak_rss_mib`` is the process's maximum resident set (``ru_maxrss``) minus
its resident set after imports and input creation; on an accelerator,
``peak_device_mib`` is its allocator's peak over the whole process (JAX:
``device.memory_stats()["peak_bytes_in_use"]``; torch:
``torch.cuda.max_memory_allocated()``), parameters and optimiser state
included; it is empty on a CPU. Times are the median of ``--repeats`` runs
after one warm-up (JAX: after compilation, with ``block_until_ready``; torch
on CUDA: with ``torch.cuda.synchronize``); ``first_call_s`` is the warm-up
call (compilation or its load from the cache included). The PyTorch release
(``--torch_reference``: a local checkout of GCLion/SDPAL, imported at run time,
never vendored) is measured with the same inputs, the same thread count and on
the same device (CUDA when torch sees one), and our figures are reported as
ratios against it. The model suite's ``train`` mode is the release's step
(Adam 1e-4, ``nn.BCELoss`` of the sigmoid on its fixed 256x256 output, as its
``main.py`` trains; ours: the same optimiser, ``loss.form="release"``, at the
input's size).

Graph inputs are realistic: non-negative, spatially correlated features as
after the fusion conv's ReLU (smoothed noise plus piecewise-constant regions),
so the thresholded graph is neither empty nor complete; its edge density is
reported.

The predict suite times the user's path end to end:
``Predictor.from_checkpoint(CHECKPOINT, flip_average=...)``, then
``predict_image(photo)`` (uint8 ``[H, W, 3]`` -> float32 ``[H, W]``: resizing or
tiling, normalisation, the network(s), the map back at the photo's size), one
photo per call, for each of
``--predict_checkpoints`` (``default``: the packaged model) and photo sizes
``--predict_sizes`` (WIDTHxHEIGHT, a deterministic photo-like image:
``realistic_photo``), plain and with ``flip_average``. For an ensemble its
first member is timed alone too, in the same run, and every row's ``ratio`` is
its seconds over that one network's plain seconds at the same size (for a
single checkpoint: over its own plain seconds); ``passes`` is the number of
network passes one photo takes (members x tiles x 2 with ``flip_average``).
Output: ``OUT/benchmark.md`` (also printed) and ``OUT/benchmark.json``.

For one GPU within a time limit (``tools/gpu_benchmark.sh``):
``--precompile_jobs N`` first compiles every JAX model configuration in N
parallel processes into a persistent compilation cache (``OUT/xla_cache``),
which the measuring processes, still one at a time, then load instead of
compiling (``compile_s``: that parallel compile's wall time); ``--time_budget``
stops starting configurations once that many seconds have passed (they are
reported as skipped) and cuts the running one's timeout to what is left;
``--memory_limit_gb`` adds a table of the largest train step's peak memory
against that limit. Nothing here imports TensorFlow; every process records
whether ``tensorflow`` ended up in ``sys.modules``. Imports sit inside the
workers so that a torch worker never loads JAX and a JAX worker never torch.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time

import numpy as np
from check_release_parity import import_release

WALK = {"steps": 3, "restart": 0.3, "threshold": 0.4}  # the release's graph module
SAMPLED = {"num_landmarks": 1024}
INIT_SHAPE = (1, 64, 64, 3)  # the parameters do not depend on the image size


# --- inputs -----------------------------------------------------------------------------------


def realistic_features(side: int, channels: int, seed: int = 0) -> np.ndarray:
  """``[1, side, side, channels]`` float32: ReLU(smooth noise + region profiles), as after fusion."""
  from scipy import ndimage  # noqa: PLC0415

  rng = np.random.default_rng(seed)
  noise = ndimage.gaussian_filter(
    rng.normal(size=(side, side, channels)).astype(np.float32), sigma=(side / 16, side / 16, 0)
  )
  noise /= noise.std() + 1e-9
  # Piecewise-constant regions (nearest of a few random centres), each with its own profile.
  centres = rng.uniform(0, side, (8, 2))
  yy, xx = np.mgrid[:side, :side]
  region = np.argmin(
    (yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2, -1
  )
  profiles = rng.normal(size=(8, channels)).astype(np.float32)
  x = np.maximum(0.6 * noise + profiles[region], 0).astype(np.float32)
  return x[None]


def realistic_photo(width: int, height: int, seed: int = 0) -> np.ndarray:
  """uint8 ``[height, width, 3]``, deterministic: smooth colour fields at two scales (random
  values on grids of 64 and 16 pixels, bicubic-upsampled, channels correlated as in photos)
  plus slightly blurred grain, as a demosaicked sensor's."""
  from PIL import Image  # noqa: PLC0415
  from scipy import ndimage  # noqa: PLC0415

  rng = np.random.default_rng(seed)
  image = np.full((height, width, 3), 128.0, np.float32)
  for cell, amplitude in ((64, 45.0), (16, 15.0)):
    shape = (-(-height // cell) + 1, -(-width // cell) + 1)
    colour = rng.normal(size=(*shape, 1)) + 0.5 * rng.normal(size=(*shape, 3))
    for c in range(3):
      field = Image.fromarray(colour[..., c].astype(np.float32))  # mode "F"
      image[..., c] += amplitude * np.asarray(field.resize((width, height), Image.BICUBIC))
  grain = ndimage.gaussian_filter(rng.normal(size=image.shape).astype(np.float32), (0.7, 0.7, 0))
  image += 6.0 * grain
  return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _rss_mib() -> float:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _timed(fn, repeats: int) -> tuple[float, object, float]:
  """(median seconds of ``repeats`` calls after a warm-up, last output, the warm-up's seconds);
  ``repeats=0``: one call, compile included, both times the same."""
  start = time.perf_counter()
  out = fn()  # warm-up / compilation
  first = time.perf_counter() - start
  if repeats == 0:
    return first, out, first
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times)), out, first


def _imports() -> dict:
  """Whether this process imported TensorFlow (the benchmark must not need it)."""
  return {"tensorflow_imported": "tensorflow" in sys.modules}


def _jax_device_peak_mib() -> float | None:
  """The first device's allocator peak (GPU/TPU), or None where it keeps none (CPU)."""
  import jax  # noqa: PLC0415

  stats = jax.devices()[0].memory_stats()
  if not stats or "peak_bytes_in_use" not in stats:
    return None
  return stats["peak_bytes_in_use"] / 2**20


def _torch_device(torch):
  return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _torch_synced(torch, device, fn):
  """``fn`` followed by a CUDA synchronise, so that the timer sees the kernels finish."""

  def run():
    out = fn()
    if device.type == "cuda":
      torch.cuda.synchronize()
    return out

  return run


def _torch_device_peak_mib(torch, device) -> float | None:
  return torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None


# --- workers (one configuration each, in their own process) ----------------------------------


def _jax_graph(spec: dict) -> dict:
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  from sdpal_jax import ops  # noqa: PLC0415

  x = jnp.asarray(np.load(spec["features"]))
  options = {"block_size": spec["block_size"]} if spec["method"] != "dense" else {}
  if spec["method"] == "blocked":
    options["similarity_cache_mib"] = spec["similarity_cache_mib"]
  if spec["method"] == "sampled":
    options.update(SAMPLED)

  @jax.jit
  def module(f, key):
    nodes = jnp.concatenate([f, ops.neighbour_pixel_residual(f)], axis=-1)
    extra = {"key": key} if spec["method"] == "sampled" else {}
    return ops.random_walk_with_restart(nodes, method=spec["method"], **WALK, **options, **extra)

  key = jax.random.key(0)
  kept_cache_mib = None  # the similarity cache the blocked walk kept (0: recomputed each step)
  if spec["method"] == "blocked":
    b, h, w, _ = x.shape
    kept_cache_mib = 0
    if ops.caches_similarities(b, h * w, spec["block_size"], spec["similarity_cache_mib"]):
      kept_cache_mib = b * ops.similarity_cache_bytes(h * w, spec["block_size"]) / 2**20
  base = _rss_mib()
  seconds, out, first = _timed(lambda: module(x, key).block_until_ready(), spec["repeats"])
  np.save(spec["output"], np.asarray(out, np.float32))
  compiled = module.lower(x, key).compile()
  analysis = compiled.memory_analysis()
  return {
    "seconds": seconds,
    "first_call_s": first,
    "peak_rss_mib": _peak_mib() - base,
    "peak_device_mib": _jax_device_peak_mib(),
    "xla_temp_mib": analysis.temp_size_in_bytes / 2**20 if analysis else None,
    "similarity_cache_mib": kept_cache_mib,
    "device": jax.devices()[0].platform,
    **_imports(),
  }


def _torch_graph(spec: dict) -> dict:
  import torch  # noqa: PLC0415

  torch.set_num_threads(spec["threads"])
  release = import_release(spec["torch_reference"])
  device = _torch_device(torch)
  module = release.GraphRandomWalkNPR(walk_steps=3, walk_restart_prob=0.7, graph_threshold=0.4)
  module = module.to(device)
  x = torch.from_numpy(np.load(spec["features"])).permute(0, 3, 1, 2).contiguous().to(device)
  base = _rss_mib()
  with torch.no_grad():
    seconds, out, first = _timed(
      _torch_synced(torch, device, lambda: module(x)[1]), spec["repeats"]
    )
  np.save(spec["output"], out.permute(0, 2, 3, 1).cpu().numpy())
  return {
    "seconds": seconds,
    "first_call_s": first,
    "peak_rss_mib": _peak_mib() - base,
    "peak_device_mib": _torch_device_peak_mib(torch, device),
    "device": device.type,
    **_imports(),
  }


def _model_config(spec: dict):
  """The release's network (``model_config.default_model_config``), output at the input's size."""
  from sdpal_jax import model_config  # noqa: PLC0415

  c = model_config.default_model_config()
  c.output_size = None
  c.dtype = spec["dtype"]
  c.walk.method = spec["walk"]
  c.update(spec.get("model_overrides", {}))
  return c


def _jax_model(spec: dict) -> dict:
  import functools  # noqa: PLC0415

  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  import optax  # noqa: PLC0415

  from sdpal_jax import train_state  # noqa: PLC0415
  from sdpal_jax.models import build_model, init_model  # noqa: PLC0415

  model = build_model(_model_config(spec))
  b, s = spec["batch"], spec["size"]
  variables = init_model(model, jax.random.key(0), INIT_SHAPE)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(0, 255, (b, s, s, 3)), jnp.float32)
  masks = jnp.asarray(rng.random((b, s, s)) > 0.9, jnp.float32)
  key = jax.random.key(1)
  base = _rss_mib()
  if spec["mode"] == "inference":
    forward = jax.jit(
      lambda v, x, k: jax.nn.sigmoid(model.apply(v, x, train=False, rngs={"walk": k}))
    )

    def run():
      return forward(variables, images, key).block_until_ready()

    def lower():
      return forward.lower(variables, images, key)

  else:
    # The release's step: Adam 1e-4 and sigmoid + BCELoss (loss.form="release").
    state = train_state.TrainState.create(
      apply_fn=model.apply,
      params=variables["params"],
      batch_stats=variables["batch_stats"],
      tx=optax.adam(1e-4),
    )
    loss_fn = train_state.make_loss({"form": "release"})
    step = jax.jit(functools.partial(train_state.train_step, loss_fn=loss_fn), donate_argnums=(0,))
    holder = {"state": state}
    batch = {"image": images, "mask": masks}

    def run():
      holder["state"], metrics = step(holder["state"], batch, key)
      return metrics["loss"].block_until_ready()

    def lower():
      return step.lower(holder["state"], batch, key)

  if spec.get("compile_only"):  # fills the persistent compilation cache (--precompile_jobs)
    start = time.perf_counter()
    lower().compile()
    return {"compile_s": time.perf_counter() - start, **_imports()}
  seconds, _, first = _timed(run, spec["repeats"])
  return {
    "seconds": seconds,
    "first_call_s": first,
    "images_per_s": b / seconds,
    "peak_rss_mib": _peak_mib() - base,
    "peak_device_mib": _jax_device_peak_mib(),
    "device": jax.devices()[0].platform,
    **_imports(),
  }


def _torch_model(spec: dict) -> dict:
  import torch  # noqa: PLC0415

  torch.set_num_threads(spec["threads"])
  release = import_release(spec["torch_reference"])
  device = _torch_device(torch)
  torch.manual_seed(0)
  model = release.FakeLocator(512, 1).to(device)
  b, s = spec["batch"], spec["size"]
  images = (torch.rand(b, 3, s, s) * 255).to(device)
  base = _rss_mib()
  if spec["mode"] == "inference":
    model.eval()
    with torch.no_grad():
      seconds, _, first = _timed(
        _torch_synced(torch, device, lambda: model(images)), spec["repeats"]
      )
  else:
    model.train()
    # The release's step (main.py L76-84, L201-202): Adam 1e-4, sigmoid of the logits, then its
    # criterion BCEWithLogitsDiceLoss(1.0, 0.0), which is nn.BCELoss on those probabilities.
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    criterion = torch.nn.BCELoss()
    masks = (torch.rand(b, 256, 256) > 0.9).float().to(device)  # its fixed 256x256 output

    def run():
      optimizer.zero_grad()
      loss = criterion(torch.sigmoid(model(images)).squeeze(1), masks)
      loss.backward()
      optimizer.step()
      return loss

    seconds, _, first = _timed(_torch_synced(torch, device, run), spec["repeats"])
  return {
    "seconds": seconds,
    "first_call_s": first,
    "images_per_s": b / seconds,
    "peak_rss_mib": _peak_mib() - base,
    "peak_device_mib": _torch_device_peak_mib(torch, device),
    "device": device.type,
    **_imports(),
  }


def _tiles(member, height: int, width: int) -> int:
  """Network passes of one ``Predictor`` (no flip) over a ``height x width`` photo: its tiles
  (``Predictor.tiles``), else 1."""
  return len(member.tiles(height, width)) or 1


def _predict(spec: dict) -> dict:
  """One checkpoint, one photo size, plain or flip-averaged: seconds per ``predict_image``."""
  import jax  # noqa: PLC0415

  from sdpal_jax.inference import Predictor  # noqa: PLC0415

  photo = np.load(spec["photo"])  # uint8 [H, W, 3]
  start = time.perf_counter()
  predictor = Predictor.from_checkpoint(spec["checkpoint"], flip_average=spec["flip_average"])
  load_s = time.perf_counter() - start
  members = getattr(predictor, "members", [predictor])  # an EnsemblePredictor, or one network
  h, w = photo.shape[:2]
  base = _rss_mib()
  seconds, prob, first = _timed(lambda: predictor.predict_image(photo), spec["repeats"])
  if prob.shape != (h, w) or prob.dtype != np.float32:
    raise ValueError(f"predict_image gave {prob.dtype} {prob.shape}, expected float32 {(h, w)}")
  return {
    "seconds": seconds,
    "first_call_s": first,
    "load_s": load_s,
    "networks": len(members),
    "passes": sum(_tiles(m, h, w) for m in members) * (2 if spec["flip_average"] else 1),
    "peak_rss_mib": _peak_mib() - base,
    "peak_device_mib": _jax_device_peak_mib(),
    "device": jax.devices()[0].platform,
    **_imports(),
  }


def _info(spec: dict) -> dict:
  """The worker side of ``machine_info``: what JAX (and torch) see in a worker's environment."""
  import jax  # noqa: PLC0415

  device = jax.devices()[0]
  stats = device.memory_stats() or {}
  info = {
    "jax": jax.__version__,
    "jax_devices": [str(d) for d in jax.devices()],
    "accelerator": device.device_kind if device.platform != "cpu" else None,
    "device_memory_limit_mib": stats["bytes_limit"] / 2**20 if "bytes_limit" in stats else None,
  }
  if spec.get("torch"):
    import torch  # noqa: PLC0415

    info["torch"] = torch.__version__
    info["torch_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
  return {**info, **_imports()}


WORKERS = {
  "jax_graph": _jax_graph,
  "torch_graph": _torch_graph,
  "jax_model": _jax_model,
  "torch_model": _torch_model,
  "predict": _predict,
  "info": _info,
}
# The environment the workers get: main() keeps this process's own JAX on the CPU, so that it
# takes no accelerator memory (JAX reserves most of a GPU's memory on its first use).
_WORKER_ENV: dict | None = None


def _run_worker(spec: dict, timeout: float, env_extra: dict | None = None) -> dict:
  env = dict(os.environ if _WORKER_ENV is None else _WORKER_ENV)
  env.setdefault("OMP_NUM_THREADS", str(spec["threads"]))
  env.update(env_extra or {})
  try:
    run = subprocess.run(
      [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
      capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip
  except subprocess.TimeoutExpired:
    return {"error": f"timed out after {timeout:.0f} s"}
  lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
  if run.returncode != 0 or not lines:
    if run.returncode in (-9, 137):
      return {"error": "out of memory (killed)"}
    tail = (run.stderr or run.stdout).strip().splitlines() or ["no output"]
    # The exception's own line, not the notes printed after it (JAX's traceback filtering).
    raised = [line for line in tail if re.match(r"[A-Za-z_][\w.]*(Error|Exception)\b", line)]
    return {"error": (raised or tail)[-1][:200]}
  return json.loads(lines[-1][len("RESULT ") :])


def _run(args, spec: dict, env_extra: dict | None = None) -> dict:
  """``_run_worker`` within ``--time_budget``: skipped once it is spent, else its timeout cut
  to what is left of it."""
  timeout = args.timeout
  if args.deadline is not None:
    left = args.deadline - time.monotonic()
    if left < 1:
      return {"error": f"skipped: the time budget ({args.time_budget:.0f} s) was spent"}
    timeout = min(timeout, left)
  result = _run_worker(spec, timeout, env_extra)
  _log(args, spec, result)
  return result


def _log(args, spec: dict, result: dict) -> None:
  """One line per configuration on stderr, as it finishes (a run cut short still shows them)."""
  keys = ("kind", "method", "size", "mode", "dtype", "network", "photo_size")
  what = " ".join(str(spec[k]) for k in keys if k in spec)
  if spec.get("flip_average"):
    what += " flip_average"
  if "compile_only" in spec:
    what += " compile"
  outcome = next((f"{k} {result[k]:.3g}" for k in ("seconds", "compile_s") if k in result), None)
  elapsed = time.monotonic() - args.started
  print(f"[{elapsed:6.1f} s] {what}: {outcome or result.get('error')}", file=sys.stderr, flush=True)


def _cache_env(args) -> dict:
  """JAX's persistent compilation cache, every entry kept (``--precompile_jobs``)."""
  if not args.precompile_jobs:
    return {}
  return {
    "JAX_COMPILATION_CACHE_DIR": os.path.abspath(args.compilation_cache),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
  }


# --- suites -----------------------------------------------------------------------------------


def edge_density(features: np.ndarray, threshold: float, rows: int = 2048, seed: int = 0) -> float:
  """Fraction of node pairs whose cosine similarity reaches ``threshold`` (sampled rows)."""
  from sdpal_jax.ops import neighbour_pixel_residual  # noqa: PLC0415

  f = np.asarray(features[0])
  nodes = np.concatenate([f, np.asarray(neighbour_pixel_residual(features))[0]], -1)
  nodes = nodes.reshape(-1, nodes.shape[-1])
  nodes /= np.linalg.norm(nodes, axis=-1, keepdims=True) + 1e-12
  pick = np.random.default_rng(seed).choice(len(nodes), min(rows, len(nodes)), replace=False)
  return float(((nodes[pick] @ nodes.T) >= threshold).mean())


def _relative_error(approx: np.ndarray, exact: np.ndarray) -> float:
  """Mean over nodes of ``|approx - exact| / |exact|`` (L2 over channels)."""
  num = np.linalg.norm((approx - exact).reshape(-1, exact.shape[-1]), axis=-1)
  den = np.linalg.norm(exact.reshape(-1, exact.shape[-1]), axis=-1) + 1e-12
  return float(np.mean(num / den))


def _memory_fraction(result: dict, release: dict) -> float | None:
  """Peak memory over the release's: device peaks where both have them, else RSS growth."""
  if result.get("peak_device_mib") is not None and release.get("peak_device_mib") is not None:
    return result["peak_device_mib"] / max(release["peak_device_mib"], 1e-9)
  return result["peak_rss_mib"] / max(release["peak_rss_mib"], 1e-9)


def graph_suite(args, out_dir: str) -> list[dict]:
  rows = []
  for side in args.graph_sizes:
    features_path = os.path.join(out_dir, f"features_{side}.npy")
    features = realistic_features(side, args.channels)
    np.save(features_path, features)
    common = {"features": features_path, "repeats": args.repeats, "threads": args.threads}
    results = {}
    for method in args.methods:
      if method == "dense" and side * side > args.max_dense_nodes:
        results[method] = {"error": f"skipped: dense above {args.max_dense_nodes} nodes"}
        continue
      output = os.path.join(out_dir, f"graph_{side}_{method}.npy")
      spec = {**common, "kind": "jax_graph", "method": method, "block_size": args.block_size,
              "similarity_cache_mib": args.similarity_cache_mib, "output": output}  # fmt: skip
      results[method] = _run(args, spec)
      results[method]["output"] = output
    if args.torch_reference and side * side <= args.max_release_nodes:
      output = os.path.join(out_dir, f"graph_{side}_release.npy")
      spec = {**common, "kind": "torch_graph", "torch_reference": args.torch_reference,
              "output": output}  # fmt: skip
      results["release"] = _run(args, spec)
      results["release"]["output"] = output
    elif args.torch_reference:
      results["release"] = {"error": f"skipped: release above {args.max_release_nodes} nodes"}
    exact = next(
      (results[m]["output"] for m in ("blocked", "dense") if "seconds" in results.get(m, {})), None
    )
    density = edge_density(features, WALK["threshold"])
    release = results.get("release", {})
    for name, result in results.items():
      row = {"suite": "graph", "nodes": f"{side}x{side}", "method": name, "edge_density": density}
      row.update({k: v for k, v in result.items() if k != "output"})
      if "seconds" in result and exact and name not in ("blocked",):
        value = np.load(result["output"])
        reference = np.load(exact)
        if name == "sampled":
          row["mean_relative_error"] = _relative_error(value, reference)
        else:
          row["max_abs_diff_vs_exact"] = float(np.abs(value - reference).max())
      if "seconds" in result and "seconds" in release and name != "release":
        row["speedup_vs_release"] = release["seconds"] / result["seconds"]
        row["memory_fraction_of_release"] = _memory_fraction(result, release)
      rows.append(row)
    for name in results:
      path = results[name].get("output")
      if path and os.path.exists(path):
        os.remove(path)
    os.remove(features_path)
  return rows


def _jax_model_specs(args) -> list[dict]:
  overrides = json.loads(args.model_overrides) if args.model_overrides else {}
  return [
    {"kind": "jax_model", "size": size, "batch": args.batch_for(size), "mode": mode,
     "repeats": args.repeats, "threads": args.threads, "dtype": dtype, "walk": args.model_walk,
     "model_overrides": overrides}
    for size in args.model_sizes for mode in ("inference", "train") for dtype in args.dtypes
  ]  # fmt: skip


def precompile(args) -> dict:
  """Compiles every JAX model configuration, ``--precompile_jobs`` at a time, into the cache.

  Returns ``{(size, mode, dtype): result}`` (``compile_s`` or ``error``). The processes keep no
  accelerator memory in reserve (``XLA_PYTHON_CLIENT_PREALLOCATE=false``), so they fit beside
  each other; the measurements come after, one process at a time.
  """
  env = {**_cache_env(args), "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
  specs = [{**spec, "compile_only": True} for spec in _jax_model_specs(args)]
  with concurrent.futures.ThreadPoolExecutor(args.precompile_jobs) as pool:
    results = list(pool.map(lambda spec: _run(args, spec, env), specs))
  return {(s["size"], s["mode"], s["dtype"]): r for s, r in zip(specs, results, strict=True)}


def model_suite(args) -> list[dict]:
  rows = []
  compiled = precompile(args) if args.precompile_jobs else {}
  env = _cache_env(args)
  jax_specs = _jax_model_specs(args)
  for size in args.model_sizes:
    for mode in ("inference", "train"):
      batch = args.batch_for(size)
      common = {"size": size, "batch": batch, "mode": mode, "repeats": args.repeats,
                "threads": args.threads}  # fmt: skip
      release = {}
      if args.torch_reference and size <= args.max_release_model_size:
        spec = {**common, "kind": "torch_model", "torch_reference": args.torch_reference}
        release = _run(args, spec)
        rows.append({"suite": "model", **common, "impl": "release", **release})
      elif args.torch_reference:
        rows.append({"suite": "model", **common, "impl": "release",
                     "error": f"skipped: release above {args.max_release_model_size}"})  # fmt: skip
      for spec in jax_specs:
        if (spec["size"], spec["mode"]) != (size, mode):
          continue
        result = _run(args, spec, env)
        precompiled = compiled.get((size, mode, spec["dtype"]), {})
        if "compile_s" in precompiled:
          result["compile_s"] = precompiled["compile_s"]
        elif "error" in precompiled and "error" not in result:
          result["precompile_error"] = precompiled["error"]
        row = {"suite": "model", **common, "impl": f"jax {spec['dtype']}", **result}
        if "seconds" in result and "seconds" in release:
          row["speedup_vs_release"] = release["seconds"] / result["seconds"]
          row["memory_fraction_of_release"] = _memory_fraction(result, release)
        rows.append(row)
  return rows


def _predict_networks(checkpoint: str) -> list[dict]:
  """What the predict suite loads for ``checkpoint``: an ensemble's first member alone
  (``network="member"``), then the ensemble; any other checkpoint alone (``"single"``)."""
  from sdpal_jax import checkpoint as checkpoint_lib  # noqa: PLC0415

  if not checkpoint_lib.is_ensemble(checkpoint):
    return [{"network": "single", "path": checkpoint}]
  first = checkpoint_lib.ensemble_members(checkpoint)[0]
  return [
    {"network": "member", "member": os.path.basename(first), "path": first},
    {"network": "ensemble", "path": checkpoint},
  ]


def predict_ratios(rows: list[dict]) -> list[dict]:
  """Sets each measured predict row's ``ratio``: its seconds over the one-network plain seconds
  (``network`` member or single, no ``flip_average``) of its checkpoint at its photo size.

  A row whose reference failed or is missing gets no ratio; other suites' rows are untouched.
  """
  predict = [r for r in rows if r["suite"] == "predict"]
  reference = {
    (r["checkpoint"], r["photo"]): r["seconds"]
    for r in predict
    if r["network"] in ("member", "single") and not r["flip_average"] and "seconds" in r
  }
  for row in predict:
    one = reference.get((row["checkpoint"], row["photo"]))
    if "seconds" in row and one:
      row["ratio"] = row["seconds"] / one
  return rows


def predict_suite(args, out_dir: str) -> list[dict]:
  """Rows per photo size, checkpoint, network (member, then ensemble) and flip_average."""
  rows = []
  for width, height in args.predict_sizes:
    photo = f"{width}x{height}"
    photo_path = os.path.join(out_dir, f"photo_{photo}.npy")
    np.save(photo_path, realistic_photo(width, height))
    for checkpoint in args.predict_checkpoints:
      for network in _predict_networks(checkpoint):
        for flip in (False, True):
          spec = {"kind": "predict", "checkpoint": network["path"], "flip_average": flip,
                  "photo": photo_path, "photo_size": photo, "network": network["network"],
                  "repeats": args.repeats, "threads": args.threads}  # fmt: skip
          result = _run(args, spec)
          rows.append({"suite": "predict", "checkpoint": checkpoint, "network": network["network"],
                       "member": network.get("member"), "flip_average": flip, "photo": photo,
                       **result})  # fmt: skip
    os.remove(photo_path)
  return predict_ratios(rows)


def memory_check(rows: list[dict], limit_gb: float) -> list[dict]:
  """The largest train step's peak memory against ``limit_gb`` (10^9 bytes), one row per impl.

  The accelerator's allocator peak where there is one; on a CPU the process's RSS growth stands
  in (it is not GPU memory, and says so).
  """
  train = [r for r in rows if r["suite"] == "model" and r["mode"] == "train"]
  if not train:
    return []
  size = max(r["size"] for r in train)
  checks = []
  for r in (r for r in train if r["size"] == size):
    check = {"size": size, "batch": r.get("batch"), "impl": r["impl"], "limit_gb": limit_gb}
    if "seconds" not in r:
      checks.append({**check, "error": r.get("error", "not measured")})
      continue
    if r.get("peak_device_mib") is not None:
      peak, source = r["peak_device_mib"], f"{r.get('device', 'device')} allocator peak"
    else:
      peak, source = r["peak_rss_mib"], "process RSS growth (CPU: not GPU memory)"
    peak_gb = peak * 2**20 / 1e9
    checks.append({**check, "peak_gb": peak_gb, "source": source, "fits": peak_gb <= limit_gb})
  return checks


# --- report -----------------------------------------------------------------------------------


def machine_info(args) -> dict:
  info = {
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "python": platform.python_version(),
    "cpu_count": os.cpu_count(),
    "threads": args.threads,
    "platform": platform.platform(),
  }
  try:
    with open("/proc/cpuinfo") as f:
      info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
  except (OSError, StopIteration):
    info["cpu"] = platform.processor()
  # Asked of a worker: this process keeps its JAX on the CPU (main); the workers see the GPU.
  worker = _run_worker({"kind": "info", "threads": args.threads,
                        "torch": bool(args.torch_reference)}, 300)  # fmt: skip
  info.update({"info_error": worker["error"]} if "error" in worker else worker)
  return info


def _fmt(value) -> str:
  if value is None:
    return ""
  if isinstance(value, float):
    return f"{value:.3g}"
  return str(value)


def _table(chosen: list[dict], columns: list[str]) -> list[str]:
  used = [c for c in columns if any(r.get(c) is not None for r in chosen)]
  lines = ["| " + " | ".join(used) + " |", "|" + "---|" * len(used)]
  return lines + ["| " + " | ".join(_fmt(r.get(c)) for c in used) + " |" for r in chosen]


def markdown(rows: list[dict], info: dict, checks=(), notes=()) -> str:
  device = f", {info['accelerator']}" if info.get("accelerator") else ""
  lines = [f"Machine: {info.get('cpu')} ({info['cpu_count']} cores, {info['threads']} threads)"
           f"{device}, jax {info.get('jax')}" + (f", torch {info['torch']}" if "torch" in info else "")
           + f", {info['date']}", ""]  # fmt: skip
  lines += [f"- {note}" for note in notes] + ([""] if notes else [])
  for suite, columns in (
    ("graph", ["nodes", "method", "similarity_cache_mib", "seconds", "peak_rss_mib",
               "peak_device_mib", "xla_temp_mib",
               "speedup_vs_release", "memory_fraction_of_release", "max_abs_diff_vs_exact",
               "mean_relative_error", "edge_density", "error"]),
    ("model", ["size", "mode", "impl", "batch", "seconds", "images_per_s", "peak_rss_mib",
               "peak_device_mib", "speedup_vs_release", "memory_fraction_of_release",
               "compile_s", "first_call_s", "error"]),
    ("predict", ["checkpoint", "network", "member", "flip_average", "photo", "passes",
                 "seconds", "ratio", "first_call_s", "load_s", "peak_rss_mib",
                 "peak_device_mib", "error"]),
  ):  # fmt: skip
    chosen = [r for r in rows if r["suite"] == suite]
    if chosen:
      lines += [f"### {suite}", "", *_table(chosen, columns), ""]
  if checks:
    lines += ["### memory", "", *_table(list(checks), ["size", "batch", "impl", "peak_gb",
              "limit_gb", "fits", "source", "error"]), ""]  # fmt: skip
  return "\n".join(lines)


def report_notes(args, tensorflow_imported: bool, wall_s: float) -> list[str]:
  """The lines above the tables: what was not measured and why, TensorFlow, wall time."""
  notes = []
  suites = args.suite.split(",")
  if not args.torch_reference and {"graph", "model"} & set(suites):
    notes.append("speedup_vs_release: not measured (no --torch_reference given)")
  if "predict" in suites:
    notes.append(
      "predict: seconds per photo (WIDTHxHEIGHT, one predict_image call); ratio: over the first "
      "member's (or the single checkpoint's) plain seconds at that size, in this run; passes: "
      "network passes per photo (members x tiles x 2 with flip_average)"
    )
  notes.append(
    f"TensorFlow imported by a benchmark process: {'yes' if tensorflow_imported else 'no'}"
  )
  return [*notes, f"wall time {wall_s:.0f} s"]


def _ints(text: str) -> list[int]:
  return [int(t) for t in text.split(",") if t]


def _batches(text: str) -> dict:
  """``"2"``: batch 2 at every size; ``"256:16,1024:1"``: per size (``{None: 2}`` / by size)."""
  if ":" not in text:
    return {None: int(text)}
  return {int(k): int(v) for k, v in (item.split(":") for item in text.split(",") if item)}


def _sizes(text: str) -> list[tuple[int, int]]:
  """``"384x256,1024x768"`` -> ``[(384, 256), (1024, 768)]``: (width, height) pairs."""
  sizes = []
  for item in (t for t in text.split(",") if t):
    match = re.fullmatch(r"(\d+)x(\d+)", item.strip())
    if not match:
      raise argparse.ArgumentTypeError(f"{item!r}: expected WIDTHxHEIGHT, e.g. 384x256")
    sizes.append((int(match[1]), int(match[2])))
  return sizes


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--suite", default="graph,model",
                 help="graph,model,predict (run in the order given)")  # fmt: skip
  p.add_argument("--out", default="benchmark_out")
  p.add_argument("--graph_sizes", type=_ints, default=[32, 64, 128, 256])
  p.add_argument("--methods", default="dense,blocked,sampled")
  p.add_argument("--channels", type=int, default=512, help="fused map width (nodes: 2x)")
  p.add_argument("--block_size", type=int, default=1024, help="blocked walk (the model default)")
  p.add_argument("--similarity_cache_mib", type=float, default=1024,
                 help="blocked walk: keep S's block pairs across steps up to this size (model "
                 "default 1024); 0: recompute each step")  # fmt: skip
  p.add_argument("--max_dense_nodes", type=int, default=128 * 128)
  p.add_argument("--max_release_nodes", type=int, default=128 * 128)
  p.add_argument("--model_sizes", type=_ints, default=[256, 512, 1024])
  p.add_argument("--max_release_model_size", type=int, default=512)
  p.add_argument("--dtypes", default="float32,bfloat16")
  p.add_argument("--model_walk", default="blocked")
  p.add_argument("--model_overrides", default="", help='JSON, e.g. {"backbone_depth": 18}')
  p.add_argument("--batch", type=_batches, default={None: 2},
                 help="batch at every size (2), or per size: 256:16,512:4,1024:1")  # fmt: skip
  p.add_argument("--predict_checkpoints", default="default",
                 help="predict suite: checkpoint directories (default: the packaged model); an "
                 "ensemble's first member is timed alone too")  # fmt: skip
  p.add_argument("--predict_sizes", type=_sizes, default=[(384, 256), (1024, 768), (2048, 1536)],
                 help="predict suite: photo sizes, WIDTHxHEIGHT (384x256: CASIA v1's)")  # fmt: skip
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
  p.add_argument("--timeout", type=float, default=3600, help="seconds per configuration")
  p.add_argument("--time_budget", type=float, default=None,
                 help="seconds for the whole run: later configurations are skipped")  # fmt: skip
  p.add_argument("--precompile_jobs", type=int, default=0,
                 help="compile the JAX model configurations in this many parallel processes "
                      "first (persistent cache)")  # fmt: skip
  p.add_argument("--compilation_cache", default=None, help="default: OUT/xla_cache")
  p.add_argument("--memory_limit_gb", type=float, default=None,
                 help="check the largest train step's peak memory against this (10^9 bytes)")  # fmt: skip
  p.add_argument("--torch_reference", default=None, help="local checkout of GCLion/SDPAL")
  p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  args.methods = [m for m in args.methods.split(",") if m]
  args.dtypes = [d for d in args.dtypes.split(",") if d]
  args.predict_checkpoints = [c for c in args.predict_checkpoints.split(",") if c]
  unknown = [s for s in args.suite.split(",") if s and s not in ("graph", "model", "predict")]
  if unknown:
    p.error(f"--suite {','.join(unknown)}: unknown (graph, model, predict).")
  batches = args.batch
  if None not in batches and set(args.model_sizes) - set(batches):
    p.error(f"--batch names no batch for sizes {sorted(set(args.model_sizes) - set(batches))}.")
  args.batch_for = lambda size: batches.get(size, batches.get(None))
  args.compilation_cache = args.compilation_cache or os.path.join(args.out, "xla_cache")
  args.started = time.monotonic()
  args.deadline = None if args.time_budget is None else args.started + args.time_budget
  if args.torch_reference:
    args.torch_reference = os.path.abspath(args.torch_reference)
    if not os.path.exists(os.path.join(args.torch_reference, "sdpal.py")):
      p.error(f"--torch_reference {args.torch_reference}: no sdpal.py there.")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.worker:
    spec = json.loads(args.worker)
    print("RESULT " + json.dumps(WORKERS[spec["kind"]](spec)), flush=True)
    return 0
  start = time.monotonic()
  global _WORKER_ENV
  _WORKER_ENV = dict(os.environ)
  os.environ["JAX_PLATFORMS"] = "cpu"  # this process: edge densities only (before jax's import)
  os.makedirs(args.out, exist_ok=True)
  suites = [s for s in args.suite.split(",") if s]
  rows = []
  for suite in suites:
    if suite == "graph":
      rows += graph_suite(args, args.out)
    elif suite == "model":
      rows += model_suite(args)
    elif suite == "predict":
      rows += predict_suite(args, args.out)
  info = machine_info(args)
  checks = memory_check(rows, args.memory_limit_gb) if args.memory_limit_gb else []
  tensorflow = "tensorflow" in sys.modules or any(
    r.get("tensorflow_imported") for r in [*rows, info]
  )
  notes = report_notes(args, tensorflow, time.monotonic() - start)
  report = markdown(rows, info, checks, notes)
  with open(os.path.join(args.out, "benchmark.md"), "w") as f:
    f.write(report + "\n")
  with open(os.path.join(args.out, "benchmark.json"), "w") as f:
    json.dump({"machine": info, "rows": rows, "memory_check": checks, "notes": notes,
               "tensorflow_imported": tensorflow, "argv": sys.argv[1:],
               "wall_s": time.monotonic() - start}, f, indent=2)  # fmt: skip
  print(report)
  return 0


if __name__ == "__main__":
  sys.exit(main())
