r"""Speed and memory of the correlation graph and the whole model, optionally beside the release.

  python tools/benchmark.py --suite graph,model --out bench_out \
      [--graph_sizes 32,64,128,256] [--methods dense,blocked,sampled] \
      [--model_sizes 256,512,1024] [--dtypes float32,bfloat16] \
      [--torch_reference /path/to/SDPAL-checkout]

Every configuration runs in a fresh subprocess, so peak memories do not mix:
``peak_rss_mib`` is the process's maximum resident set (``ru_maxrss``) minus
its resident set after imports and input creation. Times are the median of
``--repeats`` runs after one warm-up (JAX: after compilation, with
``block_until_ready``). The PyTorch release (``--torch_reference``: a local
checkout of GCLion/SDPAL, imported at run time, never vendored) is measured
with the same inputs and the same thread count, and our figures are reported
as ratios against it.

Graph inputs are realistic: non-negative, spatially correlated features as
after the fusion conv's ReLU (smoothed noise plus piecewise-constant regions),
so the thresholded graph is neither empty nor complete; its edge density is
reported. Output: ``OUT/benchmark.md`` (also printed) and ``OUT/benchmark.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
WALK = {"steps": 3, "restart": 0.3, "threshold": 0.4}  # the release's graph module
SAMPLED = {"num_landmarks": 1024}


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


def _rss_mib() -> float:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _timed(fn, repeats: int) -> tuple[float, object]:
  """Median seconds of ``repeats`` calls after a warm-up; ``repeats=0``: one call, compile included."""
  if repeats == 0:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out
  out = fn()  # warm-up / compilation
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times)), out


# --- workers (one configuration each, in their own process) ----------------------------------


def _jax_graph(spec: dict) -> dict:
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  from sdpal_jax import ops  # noqa: PLC0415

  x = jnp.asarray(np.load(spec["features"]))
  options = {"block_size": spec["block_size"]} if spec["method"] != "dense" else {}
  if spec["method"] == "sampled":
    options.update(SAMPLED)

  @jax.jit
  def module(f, key):
    nodes = jnp.concatenate([f, ops.neighbour_pixel_residual(f)], axis=-1)
    extra = {"key": key} if spec["method"] == "sampled" else {}
    return ops.random_walk_with_restart(nodes, method=spec["method"], **WALK, **options, **extra)

  key = jax.random.key(0)
  base = _rss_mib()
  seconds, out = _timed(lambda: module(x, key).block_until_ready(), spec["repeats"])
  np.save(spec["output"], np.asarray(out, np.float32))
  compiled = module.lower(x, key).compile()
  analysis = compiled.memory_analysis()
  return {
    "seconds": seconds,
    "peak_rss_mib": _peak_mib() - base,
    "xla_temp_mib": analysis.temp_size_in_bytes / 2**20 if analysis else None,
  }


def _torch_graph(spec: dict) -> dict:
  import torch  # noqa: PLC0415

  torch.set_num_threads(spec["threads"])
  sys.path.insert(0, spec["torch_reference"])
  import sdpal as release  # noqa: PLC0415

  module = release.GraphRandomWalkNPR(walk_steps=3, walk_restart_prob=0.7, graph_threshold=0.4)
  x = torch.from_numpy(np.load(spec["features"])).permute(0, 3, 1, 2).contiguous()
  base = _rss_mib()
  with torch.no_grad():
    seconds, out = _timed(lambda: module(x)[1], spec["repeats"])
  np.save(spec["output"], out.permute(0, 2, 3, 1).numpy())
  return {"seconds": seconds, "peak_rss_mib": _peak_mib() - base}


def _model_config(spec: dict):
  from sdpal_jax import model_config  # noqa: PLC0415

  c = model_config.release_model_config()
  c.output_size = None
  c.dtype = spec["dtype"]
  c.walk.method = spec["walk"]
  for field, value in spec.get("model_overrides", {}).items():
    c[field] = value
  return c


def _jax_model(spec: dict) -> dict:
  import functools  # noqa: PLC0415

  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  import ml_collections  # noqa: PLC0415
  import optax  # noqa: PLC0415

  from sdpal_jax import train_state  # noqa: PLC0415
  from sdpal_jax.models import build_model, init_model  # noqa: PLC0415

  model = build_model(_model_config(spec))
  b, s = spec["batch"], spec["size"]
  variables = init_model(model, jax.random.key(0), (b, s, s, 3))
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(0, 255, (b, s, s, 3)), jnp.float32)
  masks = jnp.asarray(rng.random((b, s, s)) > 0.9, jnp.float32)
  key = jax.random.key(1)
  base = _rss_mib()
  if spec["mode"] == "inference":
    forward = jax.jit(
      lambda v, x, k: jax.nn.sigmoid(model.apply(v, x, train=False, rngs={"walk": k}))
    )
    seconds, _ = _timed(
      lambda: forward(variables, images, key).block_until_ready(), spec["repeats"]
    )
  else:
    # The release's step: Adam 1e-4 and sigmoid + BCELoss (loss.form="release").
    state = train_state.TrainState.create(
      apply_fn=model.apply,
      params=variables["params"],
      batch_stats=variables["batch_stats"],
      tx=optax.adam(1e-4),
    )
    loss_fn = train_state.make_loss(ml_collections.ConfigDict({"form": "release"}))
    step = jax.jit(functools.partial(train_state.train_step, loss_fn=loss_fn), donate_argnums=(0,))
    holder = {"state": state}

    def run():
      holder["state"], metrics = step(holder["state"], {"image": images, "mask": masks}, key)
      return metrics["loss"].block_until_ready()

    seconds, _ = _timed(run, spec["repeats"])
  return {"seconds": seconds, "images_per_s": b / seconds, "peak_rss_mib": _peak_mib() - base}


def _torch_model(spec: dict) -> dict:
  import torch  # noqa: PLC0415

  torch.set_num_threads(spec["threads"])
  sys.path.insert(0, spec["torch_reference"])
  import resnet as release_resnet  # noqa: PLC0415

  release_resnet.model_zoo.load_url = lambda *a, **k: {}  # no ImageNet download
  import sdpal as release  # noqa: PLC0415

  torch.manual_seed(0)
  model = release.FakeLocator(512, 1)
  b, s = spec["batch"], spec["size"]
  images = torch.rand(b, 3, s, s) * 255
  base = _rss_mib()
  if spec["mode"] == "inference":
    model.eval()
    with torch.no_grad():
      seconds, _ = _timed(lambda: model(images), spec["repeats"])
  else:
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    masks = (torch.rand(b, 1, 256, 256) > 0.9).float()  # the release's fixed 256x256 output

    def run():
      optimizer.zero_grad()
      logits = model(images)
      loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.view_as(masks), masks)
      loss.backward()
      optimizer.step()
      return loss

    seconds, _ = _timed(run, spec["repeats"])
  return {"seconds": seconds, "images_per_s": b / seconds, "peak_rss_mib": _peak_mib() - base}


WORKERS = {
  "jax_graph": _jax_graph,
  "torch_graph": _torch_graph,
  "jax_model": _jax_model,
  "torch_model": _torch_model,
}


def _run_worker(spec: dict, timeout: float) -> dict:
  env = dict(os.environ)
  env.setdefault("OMP_NUM_THREADS", str(spec["threads"]))
  try:
    run = subprocess.run(
      [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
      capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip
  except subprocess.TimeoutExpired:
    return {"error": f"timed out after {timeout:.0f} s"}
  lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
  if run.returncode != 0 or not lines:
    tail = (run.stderr or run.stdout).strip().splitlines()[-1:] or ["no output"]
    reason = "out of memory (killed)" if run.returncode in (-9, 137) else tail[0][:200]
    return {"error": reason}
  return json.loads(lines[-1][len("RESULT ") :])


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
              "output": output}  # fmt: skip
      results[method] = _run_worker(spec, args.timeout)
      results[method]["output"] = output
    if args.torch_reference and side * side <= args.max_release_nodes:
      output = os.path.join(out_dir, f"graph_{side}_release.npy")
      spec = {**common, "kind": "torch_graph", "torch_reference": args.torch_reference,
              "output": output}  # fmt: skip
      results["release"] = _run_worker(spec, args.timeout)
      results["release"]["output"] = output
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
        row["memory_fraction_of_release"] = result["peak_rss_mib"] / max(
          release["peak_rss_mib"], 1e-9
        )
      rows.append(row)
    for name in results:
      path = results[name].get("output")
      if path and os.path.exists(path):
        os.remove(path)
    os.remove(features_path)
  return rows


def model_suite(args) -> list[dict]:
  rows = []
  overrides = json.loads(args.model_overrides) if args.model_overrides else {}
  for size in args.model_sizes:
    for mode in ("inference", "train"):
      common = {"size": size, "batch": args.batch, "mode": mode, "repeats": args.repeats,
                "threads": args.threads}  # fmt: skip
      release = {}
      if args.torch_reference and size <= args.max_release_model_size:
        spec = {**common, "kind": "torch_model", "torch_reference": args.torch_reference}
        release = _run_worker(spec, args.timeout)
        rows.append({"suite": "model", "size": size, "mode": mode, "impl": "release", **release})
      for dtype in args.dtypes:
        spec = {**common, "kind": "jax_model", "dtype": dtype, "walk": args.model_walk,
                "model_overrides": overrides}  # fmt: skip
        result = _run_worker(spec, args.timeout)
        row = {"suite": "model", "size": size, "mode": mode, "impl": f"jax {dtype}", **result}
        if "seconds" in result and "seconds" in release:
          row["speedup_vs_release"] = release["seconds"] / result["seconds"]
        rows.append(row)
  return rows


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
  import jax  # noqa: PLC0415

  info["jax"] = jax.__version__
  info["jax_devices"] = [str(d) for d in jax.devices()]
  if args.torch_reference:
    import torch  # noqa: PLC0415

    info["torch"] = torch.__version__
  return info


def _fmt(value) -> str:
  if value is None:
    return ""
  if isinstance(value, float):
    return f"{value:.3g}"
  return str(value)


def markdown(rows: list[dict], info: dict) -> str:
  lines = [f"Machine: {info.get('cpu')} ({info['cpu_count']} cores, {info['threads']} threads), "
           f"jax {info['jax']}" + (f", torch {info['torch']}" if "torch" in info else "") +
           f", {info['date']}", ""]  # fmt: skip
  for suite, columns in (
    ("graph", ["nodes", "method", "seconds", "peak_rss_mib", "xla_temp_mib", "speedup_vs_release",
               "memory_fraction_of_release", "max_abs_diff_vs_exact", "mean_relative_error",
               "edge_density", "error"]),
    ("model", ["size", "mode", "impl", "seconds", "images_per_s", "peak_rss_mib",
               "speedup_vs_release", "error"]),
  ):  # fmt: skip
    chosen = [r for r in rows if r["suite"] == suite]
    if not chosen:
      continue
    used = [c for c in columns if any(c in r for r in chosen)]
    lines += [f"### {suite}", "", "| " + " | ".join(used) + " |", "|" + "---|" * len(used)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in used) + " |" for r in chosen]
    lines.append("")
  return "\n".join(lines)


def _ints(text: str) -> list[int]:
  return [int(t) for t in text.split(",") if t]


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--suite", default="graph,model")
  p.add_argument("--out", default="benchmark_out")
  p.add_argument("--graph_sizes", type=_ints, default=[32, 64, 128, 256])
  p.add_argument("--methods", default="dense,blocked,sampled")
  p.add_argument("--channels", type=int, default=512, help="fused map width (nodes: 2x)")
  p.add_argument("--block_size", type=int, default=512)
  p.add_argument("--max_dense_nodes", type=int, default=128 * 128)
  p.add_argument("--max_release_nodes", type=int, default=128 * 128)
  p.add_argument("--model_sizes", type=_ints, default=[256, 512, 1024])
  p.add_argument("--max_release_model_size", type=int, default=512)
  p.add_argument("--dtypes", default="float32,bfloat16")
  p.add_argument("--model_walk", default="blocked")
  p.add_argument("--model_overrides", default="", help='JSON, e.g. {"backbone_depth": 18}')
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
  p.add_argument("--timeout", type=float, default=3600)
  p.add_argument("--torch_reference", default=None, help="local checkout of GCLion/SDPAL")
  p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  args.methods = [m for m in args.methods.split(",") if m]
  args.dtypes = [d for d in args.dtypes.split(",") if d]
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
  os.makedirs(args.out, exist_ok=True)
  suites = [s for s in args.suite.split(",") if s]
  rows = []
  if "graph" in suites:
    rows += graph_suite(args, args.out)
  if "model" in suites:
    rows += model_suite(args)
  info = machine_info(args)
  report = markdown(rows, info)
  with open(os.path.join(args.out, "benchmark.md"), "w") as f:
    f.write(report + "\n")
  with open(os.path.join(args.out, "benchmark.json"), "w") as f:
    json.dump({"machine": info, "rows": rows, "argv": sys.argv[1:]}, f, indent=2)
  print(report)
  return 0


if __name__ == "__main__":
  sys.exit(main())
