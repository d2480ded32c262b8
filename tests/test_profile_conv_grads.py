"""tools/profile_conv_grads.py reads XLA:CPU traces: op classes from the HLO, the busy-thread timeline."""

import os
import sys

import jax
import jax.numpy as jnp
import pytest
from jax import lax

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
from profile_conv_grads import _busy_thread_timeline, hlo_op_classes  # noqa: E402


def test_timeline_splits_the_span_by_how_many_threads_are_in_ops():
  ms = 1_000_000
  threads = [
    [(0, 4 * ms, "matrix product"), (6 * ms, 10 * ms, "other")],
    [(2 * ms, 5 * ms, "convolution 3x3"), (8 * ms, 10 * ms, "other")],
  ]
  timeline = _busy_thread_timeline(threads)
  assert timeline == pytest.approx(
    {
      "1 thread in an op (matrix product)": 0.002,
      "2 threads in ops": 0.002 + 0.002,
      "1 thread in an op (convolution 3x3)": 0.001,
      "no thread in an op": 0.001,
      "1 thread in an op (other)": 0.002,
    }
  )
  assert sum(timeline.values()) == pytest.approx(0.010)


def test_nested_events_count_once_as_the_innermost():
  ms = 1_000_000
  timeline = _busy_thread_timeline([[(0, 4 * ms, "other"), (1 * ms, 2 * ms, "matrix product")]])
  assert sum(timeline.values()) == pytest.approx(0.004)
  assert timeline["1 thread in an op (other)"] == pytest.approx(0.003)
  assert timeline["1 thread in an op (matrix product)"] == pytest.approx(0.001)


def test_op_classes_name_the_convolution_or_product_a_fusion_calls():
  def step(x, kernel, w):
    y = lax.conv_general_dilated(x, kernel, (1, 1), "SAME", rhs_dilation=(2, 2),
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip
    return jnp.tanh(y.reshape(-1, 4) @ w).sum()

  args = (jnp.ones((1, 8, 8, 4)), jnp.ones((3, 3, 4, 4)), jnp.ones((4, 4)))
  classes = hlo_op_classes(jax.jit(step).lower(*args).compile().as_text())
  found = set(classes.values())
  assert "convolution 3x3 dilated" in found
  assert "matrix product" in found
  assert "other (elementwise, copies, reductions)" in found
