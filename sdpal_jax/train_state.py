"""The training step: optimiser, loss, ``TrainState`` and ``train_step``.

Everything here is pure and needs neither TensorFlow nor any data code, so
benchmarks and parity checks import it alone (``make_loss`` takes any mapping).
``sdpal_jax.train`` runs the loop around it (data, evaluation, checkpoints).

The shapes follow flax's ``examples/imagenet``: ``create_train_state`` builds
the state from a config, ``train_step(state, batch, walk_key, loss_fn=...)``
returns the new state and the step's metrics; jit happens at the call site.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from sdpal_jax.errors import ConfigError
from sdpal_jax.models import init_model

LossFn = Callable[[jax.Array, jax.Array], jax.Array]
LOSS_FORMS = ("logits", "release")
SCHEDULES = ("constant", "cosine", "warmup_cosine")


class TrainState(train_state.TrainState):
  """Flax's ``TrainState`` (step, params, optimiser state) plus BatchNorm statistics."""

  batch_stats: Any = None


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """``config.optimizer.schedule`` as an optax schedule of the step (also logged)."""
  opt = config.optimizer
  steps = int(config.num_train_steps)
  if opt.schedule == "constant":
    return optax.constant_schedule(opt.learning_rate)
  if opt.schedule == "cosine":
    return optax.cosine_decay_schedule(opt.learning_rate, steps)
  if opt.schedule == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(
      0.0, opt.learning_rate, opt.warmup_steps, max(steps, opt.warmup_steps + 1)
    )
  raise ConfigError(f"optimizer.schedule={opt.schedule!r}; expected one of {', '.join(SCHEDULES)}.")


def accumulation_steps(config: ml_collections.ConfigDict) -> int:
  """``config.optimizer.accumulation_steps`` (1 when absent, e.g. in an older config)."""
  k = config.optimizer.get("accumulation_steps", 1)
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise ConfigError(f"optimizer.accumulation_steps={k!r}; must be an integer >= 1.")
  return k


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam (AdamW when ``optimizer.weight_decay``), optional global-norm clipping first.

  The release uses ``torch.optim.Adam(lr=1e-4)``: optax's ``adam`` has the
  same defaults (b1 0.9, b2 0.999, eps 1e-8 added outside the square root).

  Gradient accumulation: with ``optimizer.accumulation_steps = k > 1`` the
  whole chain is wrapped in ``optax.MultiSteps(every_k_schedule=k)``; each
  ``train_step`` (a micro-batch of ``global_batch_size``) adds its gradient to
  a running mean, and every k-th one applies clipping and Adam to the mean of
  the k gradients, i.e. one update with the gradient of a batch k times as
  large (exactly, for a loss that is a mean over examples and a network
  without batch statistics; BatchNorm still normalises, and updates its
  running statistics, per micro-batch). The other k - 1 calls leave the
  parameters unchanged.

  Steps: ``state.step``, ``num_train_steps``, ``optimizer.warmup_steps`` and
  every ``*_every_steps`` count micro-batches (calls of ``train_step``), as the
  training loop does. The learning rate changes once per optimizer update: the
  update that ends at micro-step ``n * k + k - 1`` uses the schedule's value at
  micro-step ``n * k`` (the first of its micro-batches), so a schedule spans
  the whole run as configured (optax's inner count advances once per update;
  it is scaled by k here). The training log's ``learning_rate`` at micro-step
  m is the schedule at m, at most k - 1 micro-steps ahead of the value used.
  A checkpoint's optimizer state depends on k: resume with the same k.
  """
  opt = config.optimizer
  k = accumulation_steps(config)
  micro_schedule = learning_rate_schedule(config)
  lr = micro_schedule if k == 1 else (lambda count: micro_schedule(count * k))
  parts = []
  if opt.grad_clip:
    parts.append(optax.clip_by_global_norm(opt.grad_clip))
  if opt.weight_decay:
    parts.append(optax.adamw(lr, weight_decay=opt.weight_decay))
  else:
    parts.append(optax.adam(lr))
  chain = optax.chain(*parts)
  if k == 1:
    return chain
  return optax.MultiSteps(chain, every_k_schedule=k).gradient_transformation()


def _clamped_log(x: jax.Array) -> jax.Array:
  """torch BCELoss's ``max(log(x), -100)`` (``-100`` where ``x == 0``, never ``-inf``)."""
  positive = x > 0
  return jnp.maximum(jnp.where(positive, jnp.log(jnp.where(positive, x, 1.0)), -100.0), -100.0)


@jax.custom_vjp
def _release_bce(logits: jax.Array, masks: jax.Array) -> jax.Array:
  """Per-pixel ``nn.BCELoss()(torch.sigmoid(logits), masks)`` (unreduced), float32."""
  probs = jax.nn.sigmoid(logits)
  return -(masks * _clamped_log(probs) + (1.0 - masks) * _clamped_log(1.0 - probs))


def _release_bce_forward(logits, masks):
  return _release_bce(logits, masks), (jax.nn.sigmoid(logits), masks)


def _release_bce_backward(residuals, cotangent):
  # torch's BCELoss backward, (p - y) / max(p (1 - p), 1e-12), then sigmoid's p (1 - p):
  # the gradient vanishes wherever float32 saturates p(1 - p) (|logit| > ~27.6), as in the release.
  probs, masks = residuals
  slope = probs * (1.0 - probs)
  grad_probs = cotangent * (probs - masks) / jnp.maximum(slope, 1e-12)
  return grad_probs * slope, jnp.zeros_like(masks)


_release_bce.defvjp(_release_bce_forward, _release_bce_backward)


def binary_cross_entropy(logits: jax.Array, masks: jax.Array, form: str = "logits") -> jax.Array:
  """Per-pixel BCE of ``logits`` against ``masks`` in {0, 1} (same shapes).

  ``form="logits"``: the numerically stable BCE-with-logits
  (``optax.sigmoid_binary_cross_entropy``). ``form="release"``: the release's
  ``nn.BCELoss()(torch.sigmoid(logits), masks)``, sigmoid first in float32 and
  each log clamped at -100 as torch's BCELoss does. Both agree to float32
  rounding while ``|logit|`` stays below ~16; beyond it the release's
  sigmoid rounds to exactly 0 or 1: a pixel on the wrong side then costs
  100 with a zero gradient (it can no longer be corrected, as in the
  release), where the logits form charges ``|logit|`` with gradient +-1.
  The gradient is torch's own backward formula (a custom VJP), which also
  vanishes for ``|logit| > ~27.6``, where torch divides by ``max(p(1-p), 1e-12)``.
  """
  if form == "logits":
    return optax.sigmoid_binary_cross_entropy(logits, masks)
  if form == "release":
    return _release_bce(logits.astype(jnp.float32), masks.astype(jnp.float32))
  raise ConfigError(f"loss.form={form!r}; expected one of {', '.join(LOSS_FORMS)}.")


def make_loss(loss_config: ml_collections.ConfigDict) -> LossFn:
  """``(logits [B, H, W], masks [B, H, W]) -> scalar`` from ``config.loss``.

  Mean BCE (``loss.form``), tampered pixels weighted by
  ``loss.positive_weight`` (torch's ``pos_weight``: tampered pixels are rare,
  ~5-10%, and weighting them lifts uncertain regions above the 0.5 threshold
  the F1 protocols use), plus ``loss.dice_weight`` x (1 - soft Dice).
  """
  form = loss_config.get("form", "logits")
  positive_weight = float(loss_config.get("positive_weight", 1.0))
  dice_weight = float(loss_config.get("dice_weight", 0.0))
  if form not in LOSS_FORMS:
    raise ConfigError(f"loss.form={form!r}; expected one of {', '.join(LOSS_FORMS)}.")
  if positive_weight <= 0:
    raise ConfigError(f"loss.positive_weight={positive_weight!r} must be > 0.")
  if dice_weight < 0:
    raise ConfigError(f"loss.dice_weight={dice_weight!r} must be >= 0.")

  def loss_fn(logits: jax.Array, masks: jax.Array) -> jax.Array:
    per_pixel = binary_cross_entropy(logits, masks, form)
    if positive_weight != 1.0:
      per_pixel = per_pixel * (1.0 + (positive_weight - 1.0) * masks)
    loss = per_pixel.mean()
    if dice_weight:
      probs = jax.nn.sigmoid(logits)
      dice = (2 * jnp.sum(probs * masks) + 1e-6) / (jnp.sum(probs) + jnp.sum(masks) + 1e-6)
      loss = loss + dice_weight * (1 - dice)
    return loss

  return loss_fn


def training_input_size(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """(H, W) of the training inputs: ``preprocess.image_size``, or ``data.crop_size`` for a
  model fed photos at their own size (``preprocess.image_size=None``, random crops)."""
  size = config.preprocess.image_size
  if size is None:
    size = config.data.crop_size
  return tuple(int(s) for s in size)


def create_train_state(
  config: ml_collections.ConfigDict,
  model,
  rng: jax.Array,
  *,
  variables: dict[str, Any] | None = None,
) -> TrainState:
  """A fresh ``TrainState`` for ``model`` (``training_input_size(config)`` inputs).

  Args:
    config: the training config (``optimizer``, ``num_train_steps``, ``preprocess``).
    model: the Flax module (``sdpal_jax.models.build_model(config.model)``).
    rng: initialisation key.
    variables: ``{"params", "batch_stats"}`` to start from instead of a random init.
  """
  if variables is None:
    variables = init_model(model, rng, (1, *training_input_size(config), 3))
  return TrainState.create(
    apply_fn=model.apply,
    params=variables["params"],
    batch_stats=variables["batch_stats"],
    tx=make_optimizer(config),
  )


def train_step(
  state: TrainState,
  batch: dict[str, jax.Array],
  walk_key: jax.Array,
  *,
  loss_fn: LossFn,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimisation step on ``batch`` (``image [B, H, W, 3]``, ``mask [B, H, W]``).

  BatchNorm runs in training mode; its new statistics are those of the whole
  (global) batch. Returns the new state and ``{"loss", "grad_norm"}``.
  """

  def compute_loss(params):
    logits, updates = state.apply_fn(
      {"params": params, "batch_stats": state.batch_stats},
      batch["image"],
      train=True,
      mutable=["batch_stats"],
      rngs={"walk": jax.random.fold_in(walk_key, state.step)},
    )
    return loss_fn(logits, batch["mask"]), updates["batch_stats"]

  (loss, batch_stats), grads = jax.value_and_grad(compute_loss, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  return new_state, {"loss": loss, "grad_norm": optax.global_norm(grads)}
