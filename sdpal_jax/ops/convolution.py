"""2-D convolution whose gradients XLA:CPU computes as matrix products (NHWC).

XLA:CPU (jax 0.10) runs forward convolutions well (YNNPACK), but ``jax.grad``
of ``lax.conv_general_dilated`` produces a kernel-gradient convolution whose
"kernel" is the whole output gradient (``window_strides`` = the forward
dilation, ``rhs_dilation`` = the forward stride, batch and feature dimensions
swapped), and that one is several times slower than the forward, most for
1x1 kernels (docs/performance.md, "CPU convolution gradients"). ``conv2d``
with ``impl="matmul_grads"`` computes the same values and gradients with
operations XLA:CPU is fast at, where they measured faster:

Shapes: ``x [B, H, W, C]``, ``kernel [kh, kw, C, O]`` (flax's HWIO),
``y [B, Ho, Wo, O]``. Per spatial axis: stride ``s``, dilation ``d``, padding
``(lo, hi)``, ``Ho = (H + lo + hi - d (kh - 1) - 1) // s + 1``; ``xp`` is ``x``
zero-padded by ``(lo, hi)``, and ``view_pq(x)[b, i, j] = xp[b, s i + d p, s j + d q]``
(``[B, Ho, Wo, C]``, a strided slice).

- forward: ``y[b, i, j, o] = sum_{p, q, c} view_pq(x)[b, i, j, c] kernel[p, q, c, o]``.
- 1x1 kernels (any stride): ``y = view_00(x) @ kernel``, one matrix product
  ``[B Ho Wo, C] x [C, O]``; its gradients are jax's rules for a product, a
  reshape and a slice: ``dx = pad(dy @ kernel^T)`` (zeros between rows/columns
  at stride 2), ``dK = view^T dy``. No convolution is left.
- kh x kw kernels with ``min(C, O) >= GEMM_KERNEL_GRAD_MIN_CHANNELS`` (custom VJP):
  the forward and the input gradient are XLA's convolutions
  (``dx[b, u, v, c] = sum_{s i + d p = u + lo, s j + d q = v + lo} dy[b, i, j, o]
  kernel[p, q, c, o]``: the stride-1 convolution of ``dy`` (zero-interleaved
  at stride > 1) with the flipped kernel, in/out channels swapped, which is what
  jax's transpose rule emits and XLA runs as fast as the forward), and the
  kernel gradient is one matrix product per tap,
  ``dK[p, q] = (dy^T view_pq(x))^T``: ``[O, B Ho Wo] x [B Ho Wo, C]``.
- smaller kh x kw kernels: ``lax.conv_general_dilated`` and jax's gradients
  (XLA's kernel-gradient convolution is the faster one there).

Each is exact up to float summation order (tests/test_convolution.py compares
values and both gradients with ``jax.grad`` of ``lax.conv_general_dilated``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

CONV_IMPLS = ("auto", "xla", "matmul_grads")
# "auto": matmul_grads where it was measured to win (XLA:CPU), xla on GPU/TPU (cuDNN / the
# MXU compute convolution gradients well; unmeasured there, so unchanged).
DEFAULT_CONV_IMPL = "auto"
NHWC = ("NHWC", "HWIO", "NHWC")
# kh x kw kernels (kh kw > 1) take the per-tap matrix-product kernel gradient when both
# channel counts reach this; below it XLA's own gradient measured faster.
GEMM_KERNEL_GRAD_MIN_CHANNELS = 256


def _pairs(value, name: str) -> tuple[int, int]:
  if isinstance(value, int):
    return (value, value)
  value = tuple(int(v) for v in value)
  if len(value) != 2:
    raise ValueError(f"{name}={value!r}; expected an int or two ints.")
  return value


def _padding_pairs(padding, kernel_hw, strides, dilation, in_hw):
  if isinstance(padding, str):
    window = [d * (k - 1) + 1 for k, d in zip(kernel_hw, dilation, strict=True)]
    return tuple(tuple(p) for p in lax.padtype_to_pads(in_hw, window, strides, padding))
  pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  if len(pads) != 2:
    raise ValueError(f"padding={padding!r}; expected two (low, high) pairs.")
  return pads


def output_size(n: int, k: int, s: int, d: int, lo: int, hi: int) -> int:
  """Output length of one spatial axis: ``(n + lo + hi - d (k - 1) - 1) // s + 1``."""
  return (n + lo + hi - d * (k - 1) - 1) // s + 1


def _xla_conv(x, kernel, strides, padding, dilation, precision=None):
  return lax.conv_general_dilated(
    x, kernel, strides, padding, rhs_dilation=dilation, dimension_numbers=NHWC, precision=precision
  )


def _pad(x, padding):
  if all(lo == hi == 0 for lo, hi in padding):
    return x
  return lax.pad(
    x, jnp.zeros((), x.dtype), ((0, 0, 0), *((lo, hi, 0) for lo, hi in padding), (0, 0, 0))
  )


def strided_view(xp, tap, strides, dilation, out_hw):
  """``view_pq``: ``xp[:, d p + s i, d q + s j, :]`` for every output position ``(i, j)``."""
  b, _, _, c = xp.shape
  start = (0, dilation[0] * tap[0], dilation[1] * tap[1], 0)
  limit = (
    b,
    start[1] + strides[0] * (out_hw[0] - 1) + 1,
    start[2] + strides[1] * (out_hw[1] - 1) + 1,
    c,
  )
  if start == (0, 0, 0, 0) and limit == xp.shape and strides == (1, 1):
    return xp
  return lax.slice(xp, start, limit, (1, strides[0], strides[1], 1))


def _out_hw(x_shape, kernel_shape, strides, padding, dilation):
  return tuple(
    output_size(n, k, s, d, lo, hi)
    for n, k, s, d, (lo, hi) in zip(
      x_shape[1:3], kernel_shape[:2], strides, dilation, padding, strict=True
    )
  )


def _pointwise(x, kernel, strides, padding, precision=None):
  """A 1x1 convolution: the strided view as ``[B Ho Wo, C]`` times ``kernel`` as ``[C, O]``.

  Two-dimensional on purpose: XLA:CPU ran the gradients of this form faster
  than those of the same product written over ``[B, Ho, Wo, C]``.
  """
  out_hw = _out_hw(x.shape, kernel.shape, strides, padding, (1, 1))
  view = strided_view(_pad(x, padding), (0, 0), strides, (1, 1), out_hw)
  b, h, w, c = view.shape
  y = lax.dot(view.reshape(b * h * w, c), kernel.reshape(c, -1), precision=precision)
  return y.reshape(b, h, w, -1)


def gemm_kernel_grad(x, dy, kernel_shape, strides, padding, dilation, precision=None):
  """``dK[p, q] = (dy^T view_pq(x))^T``: one ``[O, B Ho Wo] x [B Ho Wo, C]`` product per tap."""
  kh, kw, _, _ = kernel_shape
  xp = _pad(x, padding)
  batch_dims = (0, 1, 2)
  taps = [
    lax.dot_general(
      dy,
      strided_view(xp, (p, q), strides, dilation, dy.shape[1:3]),
      ((batch_dims, batch_dims), ((), ())),
      precision=precision,
    )  # [O, C]
    for p in range(kh)
    for q in range(kw)
  ]
  return jnp.swapaxes(jnp.stack(taps), 1, 2).reshape(kernel_shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv_gemm_kernel_grad(x, kernel, strides, padding, dilation, precision):
  return _xla_conv(x, kernel, strides, padding, dilation, precision)


def _conv_gemm_kernel_grad_fwd(x, kernel, strides, padding, dilation, precision):
  return _xla_conv(x, kernel, strides, padding, dilation, precision), (x, kernel)


def _conv_gemm_kernel_grad_bwd(strides, padding, dilation, precision, residuals, dy):
  x, kernel = residuals
  _, input_vjp = jax.vjp(
    lambda lhs: _xla_conv(lhs, kernel, strides, padding, dilation, precision), x
  )
  (dx,) = input_vjp(dy)
  dk = gemm_kernel_grad(x, dy, kernel.shape, strides, padding, dilation, precision)
  return dx, dk.astype(kernel.dtype)


_conv_gemm_kernel_grad.defvjp(_conv_gemm_kernel_grad_fwd, _conv_gemm_kernel_grad_bwd)


def resolve_conv_impl(impl: str) -> str:
  """``"auto"`` -> ``"matmul_grads"`` on the CPU backend, ``"xla"`` on others; others unchanged."""
  if impl not in CONV_IMPLS:
    raise ValueError(f"conv_impl={impl!r}; expected one of {CONV_IMPLS}.")
  if impl == "auto":
    return "matmul_grads" if jax.default_backend() == "cpu" else "xla"
  return impl


def conv2d(
  x: jnp.ndarray,
  kernel: jnp.ndarray,
  *,
  strides: int | Sequence[int] = 1,
  padding: str | Sequence[tuple[int, int]] = "VALID",
  dilation: int | Sequence[int] = 1,
  impl: str = "matmul_grads",
  precision=None,
) -> jnp.ndarray:
  """``[B, H, W, C] * [kh, kw, C, O] -> [B, Ho, Wo, O]`` (the module docstring has the math).

  Args:
    x: the input, NHWC.
    kernel: HWIO, as ``flax.linen.Conv``'s ``kernel`` parameter.
    strides: window strides (an int or a pair).
    padding: ``"SAME"``, ``"VALID"`` or two ``(low, high)`` pairs.
    dilation: kernel (atrous) dilation (an int or a pair).
    impl: ``"matmul_grads"`` (matrix products where they are faster on XLA:CPU),
      ``"xla"`` (``lax.conv_general_dilated`` and jax's gradients) or ``"auto"``
      (``resolve_conv_impl``: the first on the CPU backend, the second elsewhere).
    precision: passed on to every convolution and matrix product.
  """
  impl = resolve_conv_impl(impl)
  if x.ndim != 4 or kernel.ndim != 4 or x.shape[-1] != kernel.shape[2]:
    raise ValueError(
      f"conv2d needs x [B, H, W, C] and kernel [kh, kw, C, O]; got {x.shape} and {kernel.shape}."
    )
  strides = _pairs(strides, "strides")
  dilation = _pairs(dilation, "dilation")
  padding = _padding_pairs(padding, kernel.shape[:2], strides, dilation, x.shape[1:3])
  kh, kw, c, o = kernel.shape
  if impl == "xla":
    return _xla_conv(x, kernel, strides, padding, dilation, precision)
  if (kh, kw) == (1, 1):
    return _pointwise(x, kernel, strides, padding, precision)
  if min(c, o) >= GEMM_KERNEL_GRAD_MIN_CHANNELS:
    return _conv_gemm_kernel_grad(x, kernel, strides, padding, dilation, precision)
  return _xla_conv(x, kernel, strides, padding, dilation, precision)


@functools.cache
def conv_general_dilated(impl: str = DEFAULT_CONV_IMPL):
  """A drop-in for ``lax.conv_general_dilated`` as ``flax.linen.Conv(conv_general_dilated=...)``.

  Only the case flax's 2-D ``nn.Conv`` produces goes to ``conv2d(..., impl=impl)``
  (NHWC/HWIO, no input dilation, one feature group); anything else falls back
  to ``lax.conv_general_dilated``. The parameters stay the module's own
  (``kernel [kh, kw, C, O]``, ``bias``), so checkpoints do not change. One
  function per ``impl`` (cached).
  """
  if impl not in CONV_IMPLS:
    raise ValueError(f"impl={impl!r}; expected one of {CONV_IMPLS}.")

  def conv(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    batch_group_count=1,
    precision=None,
    preferred_element_type=None,
  ):
    plain = (
      impl != "xla"
      and lhs.ndim == 4
      and (lhs_dilation is None or all(v == 1 for v in lhs_dilation))
      and feature_group_count == 1
      and batch_group_count == 1
      and preferred_element_type is None
      and _is_nhwc(dimension_numbers, lhs.ndim)
    )
    if not plain:
      return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, batch_group_count=batch_group_count,
        precision=precision, preferred_element_type=preferred_element_type,
      )  # fmt: skip
    return conv2d(
      lhs,
      rhs,
      strides=tuple(window_strides),
      padding=padding,
      dilation=tuple(rhs_dilation) if rhs_dilation is not None else 1,
      impl=impl,
      precision=precision,
    )

  return conv


def _is_nhwc(dimension_numbers, ndim: int) -> bool:
  if dimension_numbers is None:
    return False
  dn = lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, dimension_numbers)
  want = lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, NHWC)
  return dn == want
