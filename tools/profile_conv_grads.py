"""Forward and forward+backward time of the paper network's convolutions, per implementation.

Collects every convolution of the network (release config: ResNet-101 v1c at
output stride 8, MOPC, MOAP, DPAL, decoder) at ``--size`` x ``--size``, batch
``--batch``, from its jaxpr (kernel, stride, dilation, channels, spatial
size), then times each distinct shape under each implementation in
``--impls``: ``forward`` (the convolution) and ``forward+backward``
(``jax.value_and_grad`` of ``sum(y * r)`` with respect to input and kernel).
The implementations run alternately in one process, one call each per round,
and the median over ``--rounds`` rounds is reported, so the ratios survive a
noisy shared machine. Rows are grouped into shape classes and weighted by how
often each shape occurs in the network (``count``).

  python tools/profile_conv_grads.py [--size 256] [--batch 2] [--rounds 7] \
      [--impls xla,matmul_grads,taps_dw,col2im,im2col_fwd] [--classes all] [--out OUT.json]

``--train_step`` times whole train steps instead (benchmark.py's model suite
step: Adam 1e-4, the release's loss, blocked walk), one model per
``model.conv_impl`` in ``--impls`` (and the release's step with
``--torch_reference``), alternating in one process, median of ``--rounds``:

  python tools/profile_conv_grads.py --train_step --impls xla,matmul_grads --rounds 3 \
      [--torch_reference /path/to/SDPAL] [--trace TRACE_DIR]

``--trace`` then traces one more, warm step per implementation
(``jax.profiler``) and prints where XLA:CPU's worker threads spent it:
thread-seconds per op class (convolutions by kernel, matrix products,
everything else) and idle, and the step's wall clock by how many threads were
inside an op (and of which class when only one was).

Implementations: ``xla`` (``lax.conv_general_dilated``, jax's autodiff rules),
``matmul_grads`` (``sdpal_jax.ops.conv2d``, the default of ``model.conv_impl``:
1x1 as a matrix product; kernel gradient of larger kernels as one matrix
product per tap when both channel counts are >= 256), ``taps_dw`` (that kernel
gradient for every kernel), ``flipped_dx`` (also the input gradient as a
forward convolution of the zero-interleaved output gradient with the flipped
kernel), ``col2im`` (input gradient as ``dy K^T``, one matrix product, and the
taps padded into place; kernel gradient as one im2col product), ``im2col_dw``
/ ``patches_dw`` (XLA's input gradient; kernel gradient as one product of the
stacked views / of ``lax.conv_general_dilated_patches``), ``im2col_fwd`` (the
forward as im2col + one matrix product, gradients by autodiff). XLA flags are
compared by running this script under different ``XLA_FLAGS``.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import platform
import re
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sdpal_jax.ops import convolution as conv_ops

# ---------------------------------------------------------------- shapes of the network


def network_convolutions(size: int, batch: int) -> list[dict]:
  """The distinct convolutions of the release's network in a training forward pass, with counts."""
  from sdpal_jax import model_config  # noqa: PLC0415
  from sdpal_jax.models import build_model  # noqa: PLC0415

  config = model_config.default_model_config()
  config.walk.method = "blocked"
  config.conv_impl = "xla"
  model = build_model(config)
  images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)

  def loss(variables, x):
    return model.apply(variables, x, train=True, mutable=["batch_stats"])[0].sum()

  closed = jax.make_jaxpr(loss)(variables, images)
  counts = collections.Counter()

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "conv_general_dilated":
        p = eqn.params
        lhs, rhs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
        counts[(lhs, rhs, p["window_strides"], p["padding"], p["rhs_dilation"])] += 1
      for value in eqn.params.values():
        for sub in value if isinstance(value, tuple | list) else (value,):
          inner = getattr(sub, "jaxpr", sub)
          if hasattr(inner, "eqns"):
            walk(inner)

  walk(closed.jaxpr)
  rows = []
  for (lhs, rhs, strides, padding, dilation), count in counts.items():
    rows.append({
      "input": list(lhs), "kernel": list(rhs), "strides": list(strides),
      "padding": [list(p) for p in padding], "dilation": list(dilation), "count": count,
      "class": shape_class(rhs, strides, dilation),
    })  # fmt: skip
  return sorted(rows, key=lambda r: (r["class"], -r["count"]))


def shape_class(kernel, strides, dilation) -> str:
  k = f"{kernel[0]}x{kernel[1]}"
  return f"{k} s{strides[0]} d{dilation[0]}"


# ---------------------------------------------------------------- candidate implementations
# Every candidate takes (x, kernel, strides, padding pairs, dilation) and is exact; the
# gradients of all are checked against "xla" (max_rel_error in the output).


def _xla_input_grad(x, kernel, strides, padding, dilation, dy):
  """jax's transpose rule: a convolution of ``dy`` (input dilation = stride) with the flipped kernel."""
  _, vjp = jax.vjp(lambda a: conv_ops._xla_conv(a, kernel, strides, padding, dilation), x)
  return vjp(dy)[0]


def _flipped_conv_input_grad(x, kernel, strides, padding, dilation, dy):
  """``dx``: ``dy`` zero-interleaved by ``lax.pad`` (interior s - 1), then a stride-1 forward
  convolution with the flipped, in/out-swapped kernel (no input dilation in the HLO)."""
  kh, kw, _, _ = kernel.shape
  pads = []
  for axis, k in enumerate((kh, kw)):
    s, d, (lo, _) = strides[axis], dilation[axis], padding[axis]
    pads.append(
      (d * (k - 1) - lo, x.shape[axis + 1] + lo - s * (dy.shape[axis + 1] - 1) - 1, s - 1)
    )
  dyp = lax.pad(dy, jnp.zeros((), dy.dtype), ((0, 0, 0), *pads, (0, 0, 0)))
  flipped = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)  # [kh, kw, O, C]
  return lax.conv_general_dilated(
    dyp, flipped, (1, 1), "VALID", rhs_dilation=dilation, dimension_numbers=conv_ops.NHWC
  )


def _col2im_input_grad(x, kernel, strides, padding, dilation, dy):
  """``dx``: ``dy K^T`` as one ``[B Ho Wo, O] x [O, kh kw C]`` product, its taps padded into place."""
  kh, kw, _, _ = kernel.shape
  dcols = lax.dot_general(dy, kernel, (((3,), (3,)), ((), ())))  # [B, Ho, Wo, kh, kw, C]
  zero = jnp.zeros((), dy.dtype)
  dx = None
  for p in range(kh):
    for q in range(kw):
      pads = [(0, 0, 0)]
      for axis, tap in enumerate((p, q)):
        low = dilation[axis] * tap - padding[axis][0]
        high = x.shape[axis + 1] - low - (strides[axis] * (dy.shape[axis + 1] - 1) + 1)
        pads.append((low, high, strides[axis] - 1))
      term = lax.pad(dcols[:, :, :, p, q, :], zero, (*pads, (0, 0, 0)))
      dx = term if dx is None else dx + term
  return dx


def _taps_kernel_grad(x, kernel, strides, padding, dilation, dy):
  return conv_ops.gemm_kernel_grad(x, dy, kernel.shape, strides, padding, dilation)


def _im2col(x, kernel_hw, strides, padding, dilation, out_hw):
  """``[B, Ho, Wo, kh kw, C]``: the strided views of the padded input, tap by tap."""
  xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  views = [
    conv_ops.strided_view(xp, (p, q), strides, dilation, out_hw)
    for p in range(kernel_hw[0])
    for q in range(kernel_hw[1])
  ]
  return jnp.stack(views, axis=3)


def _im2col_kernel_grad(x, kernel, strides, padding, dilation, dy):
  """``dK`` as one ``[kh kw C, B Ho Wo] x [B Ho Wo, O]`` product of the stacked views."""
  kh, kw, c, o = kernel.shape
  cols = _im2col(x, (kh, kw), strides, padding, dilation, dy.shape[1:3])
  grad = lax.dot_general(cols, dy, (((0, 1, 2), (0, 1, 2)), ((), ())))
  return grad.reshape(kh, kw, c, o)


def _patches_kernel_grad(x, kernel, strides, padding, dilation, dy):
  """``dK`` with the im2col matrix from ``lax.conv_general_dilated_patches`` ([C, kh, kw] order)."""
  kh, kw, c, o = kernel.shape
  cols = lax.conv_general_dilated_patches(
    x, (kh, kw), strides, padding, rhs_dilation=dilation, dimension_numbers=conv_ops.NHWC
  )
  grad = jnp.einsum("bijk,bijo->ko", cols, dy)
  return grad.reshape(c, kh, kw, o).transpose(1, 2, 0, 3)


def _custom(dx_fn, dw_fn):
  """XLA's forward convolution with the given input- and kernel-gradient functions."""

  @functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
  def conv(x, kernel, strides, padding, dilation):
    return conv_ops._xla_conv(x, kernel, strides, padding, dilation)

  def fwd(x, kernel, strides, padding, dilation):
    return conv(x, kernel, strides, padding, dilation), (x, kernel)

  def bwd(strides, padding, dilation, res, dy):
    x, kernel = res
    return (
      dx_fn(x, kernel, strides, padding, dilation, dy),
      dw_fn(x, kernel, strides, padding, dilation, dy),
    )

  conv.defvjp(fwd, bwd)
  return conv


def _im2col_forward(x, kernel, strides, padding, dilation):
  """The forward itself as im2col + one matrix product; gradients by autodiff."""
  kh, kw, c, o = kernel.shape
  out_hw = conv_ops._out_hw(x.shape, kernel.shape, strides, padding, dilation)
  cols = _im2col(x, (kh, kw), strides, padding, dilation, out_hw)
  return lax.dot_general(cols, kernel.reshape(kh * kw, c, o), (((3, 4), (0, 1)), ((), ())))


IMPLS = {
  "xla": lambda x, k, s, p, d: conv_ops._xla_conv(x, k, s, p, d),
  "matmul_grads": lambda x, k, s, p, d: conv_ops.conv2d(x, k, strides=s, padding=p, dilation=d),
  # matmul_grads' kernel gradient for every kernel, whatever its channels
  "taps_dw": _custom(_xla_input_grad, _taps_kernel_grad),
  "flipped_dx": _custom(_flipped_conv_input_grad, _taps_kernel_grad),
  "col2im": _custom(_col2im_input_grad, _im2col_kernel_grad),
  "im2col_dw": _custom(_xla_input_grad, _im2col_kernel_grad),
  "patches_dw": _custom(_xla_input_grad, _patches_kernel_grad),
  "im2col_fwd": _im2col_forward,
}


# ---------------------------------------------------------------- timing


def _time(fn, *args) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def profile_shape(row: dict, impls: list[str], rounds: int, check: bool) -> dict:
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=row["input"]), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=row["kernel"]) * 0.05, jnp.float32)
  s, d = tuple(row["strides"]), tuple(row["dilation"])
  p = tuple(tuple(v) for v in row["padding"])
  y_shape = jax.eval_shape(lambda a, b: conv_ops._xla_conv(a, b, s, p, d), x, kernel).shape
  r = jnp.asarray(rng.normal(size=y_shape), jnp.float32)
  fns = {}
  for name in impls:
    conv = IMPLS[name]
    forward = jax.jit(lambda a, b, conv=conv: conv(a, b, s, p, d))
    both = jax.jit(
      jax.value_and_grad(lambda a, b, conv=conv: jnp.sum(conv(a, b, s, p, d) * r), (0, 1))
    )
    jax.block_until_ready(forward(x, kernel))  # compile + warm up
    jax.block_until_ready(both(x, kernel))
    fns[name] = (forward, both)
  errors = {}
  if check:
    _, (gx0, gk0) = fns["xla"][1](x, kernel) if "xla" in fns else (None, (None, None))
    for name, (_, both) in fns.items():
      if gx0 is None:
        break
      _, (gx, gk) = both(x, kernel)
      errors[name] = [
        float(jnp.max(jnp.abs(gx - gx0)) / (jnp.max(jnp.abs(gx0)) + 1e-30)),
        float(jnp.max(jnp.abs(gk - gk0)) / (jnp.max(jnp.abs(gk0)) + 1e-30)),
      ]
  times = {name: {"forward": [], "forward_backward": []} for name in impls}
  for _ in range(rounds):
    for name in impls:  # alternate: every implementation once per round
      forward, both = fns[name]
      times[name]["forward"].append(_time(forward, x, kernel))
      times[name]["forward_backward"].append(_time(both, x, kernel))
  result = {**row, "times": {}, "max_rel_error": errors}
  for name in impls:
    result["times"][name] = {k: statistics.median(v) for k, v in times[name].items()}
  return result


def jax_train_step(size: int, batch: int, conv_impl: str):
  """benchmark.py's model-suite train step (Adam 1e-4, release loss, blocked walk), one impl."""
  import optax  # noqa: PLC0415

  from sdpal_jax import model_config, train_state  # noqa: PLC0415
  from sdpal_jax.models import build_model, init_model  # noqa: PLC0415

  config = model_config.default_model_config()
  config.walk.method = "blocked"
  config.conv_impl = conv_impl
  model = build_model(config)
  variables = init_model(model, jax.random.key(0), (1, 64, 64, 3))
  rng = np.random.default_rng(0)
  batch_ = {
    "image": jnp.asarray(rng.uniform(0, 255, (batch, size, size, 3)), jnp.float32),
    "mask": jnp.asarray(rng.random((batch, size, size)) > 0.9, jnp.float32),
  }
  state = train_state.TrainState.create(
    apply_fn=model.apply,
    params=variables["params"],
    batch_stats=variables["batch_stats"],
    tx=optax.adam(1e-4),
  )
  loss_fn = train_state.make_loss({"form": "release"})
  step = jax.jit(functools.partial(train_state.train_step, loss_fn=loss_fn), donate_argnums=(0,))
  holder = {"state": state}
  key = jax.random.key(1)

  def run():
    holder["state"], metrics = step(holder["state"], batch_, key)
    return float(metrics["loss"])

  run.optimized_hlo = lambda: step.lower(holder["state"], batch_, key).compile().as_text()
  return run


def torch_train_step(size: int, batch: int, reference: str, threads: int):
  """The release's train step as benchmark.py times it (Adam 1e-4, BCE on its 256x256 output)."""
  import sys  # noqa: PLC0415

  import torch  # noqa: PLC0415

  torch.set_num_threads(threads)
  sys.path.insert(0, reference)
  import resnet as release_resnet  # noqa: PLC0415

  release_resnet.model_zoo.load_url = lambda *a, **k: {}  # no ImageNet download
  import sdpal as release  # noqa: PLC0415

  torch.manual_seed(0)
  model = release.FakeLocator(512, 1)
  model.train()
  images = torch.rand(batch, 3, size, size) * 255
  masks = (torch.rand(batch, 1, 256, 256) > 0.9).float()
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

  def run():
    optimizer.zero_grad()
    logits = model(images)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.view_as(masks), masks)
    loss.backward()
    optimizer.step()
    return loss.item()

  return run


def profile_train_steps(args, impls: list[str]) -> dict:
  """Median seconds per train step, every implementation (and the release) once per round."""
  steps = {}
  if args.torch_reference:
    steps["release"] = torch_train_step(args.size, args.batch, args.torch_reference, args.threads)
  for impl in impls:
    steps[f"jax float32 {impl}"] = jax_train_step(args.size, args.batch, impl)
  times = {name: [] for name in steps}
  for name, run in steps.items():  # compile + warm up
    start = time.perf_counter()
    run()
    print(f"{name}: first call {time.perf_counter() - start:.1f} s", flush=True)
  for round_ in range(args.rounds):
    for name, run in steps.items():
      start = time.perf_counter()
      run()
      times[name].append(time.perf_counter() - start)
    print(f"round {round_ + 1}: " + "  ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items()),
          flush=True)  # fmt: skip
  return {name: statistics.median(t) for name, t in times.items()}


def hlo_op_classes(hlo_text: str) -> dict[str, str]:
  """Instruction name -> class ("convolution KxK", "... dilated", "matrix product", "other ...").

  A fusion takes the class of the convolution or dot it calls, else "other"
  (elementwise, copies, slices, reductions).
  """
  bodies, instructions, current = {}, {}, None
  for line in hlo_text.splitlines():
    header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
    if header:
      current = bodies.setdefault(header.group(1), [])
      continue
    named = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = ", line)
    if named and current is not None:
      current.append(line)
      instructions[named.group(1)] = line

  def own_class(line: str) -> str | None:
    if " convolution(" in line:
      window = re.search(r"window=\{([^}]*)\}", line)
      size = re.search(r"size=(\S+)", window.group(1)).group(1) if window else "?"
      dilated = " dilated" if window and "rhs_dilate" in window.group(1) else ""
      return f"convolution {size if size in ('1x1', '3x3') else 'other'}{dilated}"
    return "matrix product" if " dot(" in line else None

  classes = {}
  for name, line in instructions.items():
    found = own_class(line)
    called = re.search(r"calls=%?([\w.\-]+)", line)
    if found is None and called:
      found = next(filter(None, map(own_class, bodies.get(called.group(1), []))), None)
    classes[name] = found or "other (elementwise, copies, reductions)"
  return classes


def trace_train_step(run, trace_dir: str) -> dict:
  """Traces one warm call of ``run``; where XLA:CPU's worker threads spent it.

  ``run`` is called twice first (compilation and the first touch of every
  buffer would otherwise land in the trace). Reads the trace with
  ``jax.profiler.ProfileData``: every op the thunk executor ran is an event on
  one of XLA's worker threads. Returns ``wall`` (s), ``threads``, ``process
  CPU`` (the process's CPU seconds over the step, all threads: with 2 cores,
  2 x wall means no idle), ``thread_seconds`` per op class (concurrent ops on
  different threads both count; "not in an op event" = threads x wall - busy:
  idle, or helping another thread's op) and ``wall_by_busy_threads`` (the
  step's wall-clock seconds by how many worker threads were inside an op
  event, and of which class when only one was: work that runs on one thread
  while the others wait shows up there).
  """
  classes = hlo_op_classes(run.optimized_hlo())
  run()
  run()
  with jax.profiler.trace(trace_dir):
    cpu_start, start = time.process_time(), time.perf_counter()
    run()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
  paths = [
    os.path.join(d, f) for d, _, fs in os.walk(trace_dir) for f in fs if f.endswith(".xplane.pb")
  ]
  seconds, intervals = collections.Counter(), {}
  for plane in jax.profiler.ProfileData.from_file(max(paths, key=os.path.getmtime)).planes:
    for line in plane.lines:
      if "XLAEigen" not in line.name:
        continue
      spans = intervals.setdefault(line.name, [])
      for event in line.events:
        if event.name in classes:
          seconds[classes[event.name]] += event.duration_ns / 1e9
          spans.append((event.start_ns, event.start_ns + event.duration_ns, classes[event.name]))
  busy = sum(seconds.values())
  return {
    "wall": wall,
    "threads": len(intervals),
    "process CPU": cpu,
    "thread_seconds": {**seconds, "not in an op event": len(intervals) * wall - busy},
    "wall_by_busy_threads": _busy_thread_timeline(list(intervals.values())),
  }


def _busy_thread_timeline(threads: list[list[tuple[int, int, str]]]) -> dict[str, float]:
  """Seconds of the traced span by the number of threads inside an op event.

  ``threads``: per worker thread, its op events as ``(start_ns, end_ns, class)``;
  a thread inside nested events counts once, as the class of the innermost.
  Keys: "no thread in an op", "1 thread in an op (CLASS)", "N threads in ops".
  """
  points = sorted(
    (time_ns, step, index, cls)
    for index, events in enumerate(threads)
    for start, end, cls in events
    for time_ns, step in ((start, 1), (end, -1))
  )
  open_events = [[] for _ in threads]  # per thread, the classes of its open events, innermost last
  timeline, last = collections.Counter(), points[0][0] if points else 0
  for time_ns, step, index, cls in points:
    inside = [stack[-1] for stack in open_events if stack]
    if len(inside) == 0:
      key = "no thread in an op"
    elif len(inside) == 1:
      key = f"1 thread in an op ({inside[0]})"
    else:
      key = f"{len(inside)} threads in ops"
    timeline[key] += (time_ns - last) / 1e9
    last = time_ns
    stack = open_events[index]
    if step > 0:
      stack.append(cls)
    else:
      del stack[len(stack) - 1 - stack[::-1].index(cls)]
  return dict(timeline)


def summarise(results: list[dict], impls: list[str]) -> str:
  """Per shape class: count-weighted seconds in the whole network and the ratio to ``xla``."""
  classes = collections.defaultdict(lambda: collections.defaultdict(float))
  for res in results:
    for name in impls:
      for part in ("forward", "forward_backward"):
        classes[res["class"]][(name, part)] += res["count"] * res["times"][name][part]
        classes["all"][(name, part)] += res["count"] * res["times"][name][part]
  head = (
    "| shape class | convs | "
    + " | ".join(f"{n} fwd ms | {n} fwd+bwd ms" for n in impls)
    + " | "
    + " | ".join(f"{n}: xla/{n} fwd+bwd" for n in impls if n != "xla")
    + " |"
  )
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  counts = collections.Counter()
  for res in results:
    counts[res["class"]] += res["count"]
    counts["all"] += res["count"]
  for cls in sorted(classes, key=lambda c: (c == "all", c)):
    t = classes[cls]
    cells = [cls, str(counts[cls])]
    for n in impls:
      cells += [f"{1e3 * t[(n, 'forward')]:.1f}", f"{1e3 * t[(n, 'forward_backward')]:.1f}"]
    for n in impls:
      if n != "xla" and "xla" in impls:
        cells.append(f"{t[('xla', 'forward_backward')] / t[(n, 'forward_backward')]:.2f}x")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--size", type=int, default=256)
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--rounds", type=int, default=7)
  p.add_argument("--impls", default="xla,matmul_grads")
  p.add_argument("--classes", default="all", help="comma-separated shape classes, e.g. '3x3 s1 d2'")
  p.add_argument("--min_count", type=int, default=1, help="only shapes occurring this often")
  p.add_argument("--no_check", action="store_true", help="skip the gradient comparison")
  p.add_argument("--out", default=None, help="write the per-shape results as JSON here")
  p.add_argument(
    "--train_step",
    action="store_true",
    help="time whole train steps instead (model.conv_impl = each of --impls, xla/matmul_grads)",
  )
  p.add_argument("--torch_reference", default=None, help="--train_step: also the release's step")
  p.add_argument(
    "--trace",
    default=None,
    help="--train_step: then trace one step per impl into this folder and print "
    "thread-seconds per op class (convolutions, matrix products, other, idle) and the wall "
    "clock by busy threads",
  )
  p.add_argument("--threads", type=int, default=2, help="torch threads (jax: all cores)")
  args = p.parse_args(argv)
  impls = args.impls.split(",")
  if args.train_step:
    medians = profile_train_steps(args, impls)
    print(f"\ntrain step at {args.size}x{args.size}, batch {args.batch}, median of {args.rounds}:")
    base = medians.get("release")
    for name, seconds in medians.items():
      ratio = f", {base / seconds:.2f}x the release" if base and name != "release" else ""
      print(f"  {name}: {seconds:.2f} s{ratio}")
    traces = {}
    if args.trace:
      for impl in impls:
        traces[impl] = trace_train_step(jax_train_step(args.size, args.batch, impl),
                                        os.path.join(args.trace, impl))  # fmt: skip
        trace = traces[impl]
        print(f"\n{impl}: traced step {trace['wall']:.2f} s on {trace['threads']} XLA threads, "
              f"process CPU {trace['process CPU']:.2f} s")  # fmt: skip
        for title, table in (("thread-seconds per op class", trace["thread_seconds"]),
                             ("wall-clock seconds by worker threads inside an op event",
                              trace["wall_by_busy_threads"])):  # fmt: skip
          print(f"{title}:")
          for k, v in sorted(table.items(), key=lambda kv: -kv[1]):
            print(f"  {v:7.2f}  {k}")
    if args.out:
      with open(args.out, "w") as f:
        json.dump({"size": args.size, "batch": args.batch, "train_step_s": medians,
                   "traces": traces}, f, indent=1)  # fmt: skip
    return
  unknown = set(impls) - set(IMPLS)
  if unknown:
    p.error(f"unknown --impls {sorted(unknown)}; choose from {sorted(IMPLS)}")
  rows = network_convolutions(args.size, args.batch)
  if args.classes != "all":
    wanted = set(args.classes.split(","))
    rows = [r for r in rows if r["class"] in wanted]
  rows = [r for r in rows if r["count"] >= args.min_count]
  print(
    f"{len(rows)} distinct convolutions ({sum(r['count'] for r in rows)} in the network) at "
    f"{args.size}x{args.size}, batch {args.batch}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; "
    f"jax {jax.__version__}; {platform.processor() or platform.machine()}",
    flush=True,
  )
  results = []
  for row in rows:
    res = profile_shape(row, impls, args.rounds, check=not args.no_check)
    results.append(res)
    cells = "  ".join(
      f"{n}: {1e3 * res['times'][n]['forward']:.1f}/{1e3 * res['times'][n]['forward_backward']:.1f} ms"
      for n in impls
    )
    print(
      f"{row['class']:>10} x{row['count']:<3} in {tuple(row['input'])} k {tuple(row['kernel'])}: "
      f"{cells}  err {res['max_rel_error']}",
      flush=True,
    )
  print()
  print(summarise(results, impls))
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"size": args.size, "batch": args.batch, "xla_flags": os.environ.get("XLA_FLAGS", ""),
                 "results": results}, f, indent=1)  # fmt: skip


if __name__ == "__main__":
  main()
