"""The generic update: P stacked policies, one `jax.vmap` over them inside one sharded `jax.jit`.

A loss is `loss_fn(model, batch) -> (scalar, metrics)` for ONE policy, where `model` is the NNX
module rebuilt from `graphdef` and that policy's parameters; the step vmaps it over the leading
policy axis of the trainable parameters, the optimizer state and the batch (`[P, B, ...]`: each
policy sees only its own rows). Frozen parameters (a shared base under
per-policy LoRA adapters) are broadcast to every policy and get no gradient. A policy whose loss
or gradient is not finite keeps its parameters and optimizer state for that step, and the step
counts it in `skipped_steps`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from marft import sharding

LossFn = Callable[[nnx.Module, Any], tuple[jax.Array, dict[str, jax.Array]]]


@flax.struct.dataclass
class TrainState:
  """Everything a run checkpoints. `params`/`opt_state` leaves have a leading policy axis."""

  step: jax.Array  # int32[]
  params: nnx.State
  opt_state: optax.OptState
  rng: jax.Array  # uint32[2] raw key data (orbax-friendly); use `jax.random.wrap_key_data`
  skipped_steps: jax.Array  # int32[P]: updates skipped for a non-finite loss or gradient
  extra: Any = None  # algorithm state (target networks, curriculum, ...)

  @property
  def num_policies(self) -> int:
    return int(self.skipped_steps.shape[0])


def learning_rate_schedule(cfg: Any) -> optax.Schedule:
  """Linear warmup to `cfg["lr"]`, then `constant`, `cosine` or `linear` decay to `total_steps`."""
  warmup = int(cfg.get("warmup_steps", 0))
  decay_steps = max(1, int(cfg["total_steps"]) - warmup)
  kind = cfg.get("schedule", "constant")
  if kind == "constant":
    after = optax.constant_schedule(cfg["lr"])
  elif kind == "cosine":
    after = optax.cosine_decay_schedule(cfg["lr"], decay_steps)
  elif kind == "linear":
    after = optax.linear_schedule(cfg["lr"], 0.0, decay_steps)
  else:
    raise ValueError(f"unknown schedule {kind!r}: constant, cosine or linear")
  if warmup == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, cfg["lr"], warmup), after], [warmup])


def make_optimizer(cfg: Any) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW with the schedule; no weight decay on vectors (norms, biases).

  Reads `lr, total_steps, warmup_steps, schedule, weight_decay, b1, b2, eps, max_grad_norm`.
  """
  decay_matrices = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  return optax.chain(
      optax.clip_by_global_norm(cfg.get("max_grad_norm", 1.0)),
      optax.adamw(learning_rate_schedule(cfg), b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999),
                  eps=cfg.get("eps", 1e-8), weight_decay=cfg.get("weight_decay", 0.0),
                  mask=decay_matrices),
  )


def init_train_state(params: nnx.State, optimizer: optax.GradientTransformation, seed: int,
                     mesh: Mesh | None = None, extra: Any = None) -> TrainState:
  """Places stacked `params` on `mesh` by their logical axes and builds a matching optimizer state."""
  num_policies = jax.tree.leaves(params)[0].shape[0]
  init_opt = jax.vmap(optimizer.init)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     opt_state=jax.eval_shape(init_opt, params),
                     rng=jax.random.key_data(jax.random.key(seed)),
                     skipped_steps=jnp.zeros((num_policies,), jnp.int32), extra=extra)
  if mesh is None:
    return state.replace(opt_state=init_opt(params))
  shardings = train_state_shardings(state, optimizer, mesh)
  params = sharding.put_global(params, shardings.params)
  opt_state = jax.jit(init_opt, out_shardings=shardings.opt_state)(params)
  rest = jax.device_put((state.step, state.rng, state.skipped_steps, extra),
                        (shardings.step, shardings.rng, shardings.skipped_steps,
                         shardings.extra))
  return TrainState(step=rest[0], params=params, opt_state=opt_state, rng=rest[1],
                    skipped_steps=rest[2], extra=rest[3])


def train_state_shardings(state: TrainState, optimizer: optax.GradientTransformation,
                          mesh: Mesh) -> TrainState:
  """Parameter shardings from the logical-axis rules; optimizer moments follow their parameter."""
  param_shardings = sharding.state_shardings(state.params, mesh, stacked=True)
  opt_shardings = optax.tree_map_params(
      optimizer, lambda _, s: s, state.opt_state, param_shardings,
      transform_non_params=lambda _: sharding.replicated(mesh),
      is_leaf=lambda x: isinstance(x, nnx.Variable))
  replicated = sharding.replicated(mesh)
  return TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings,
                    rng=replicated, skipped_steps=replicated,
                    extra=jax.tree.map(lambda _: replicated, state.extra))


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation,
                    graphdef: nnx.GraphDef, *, mesh: Mesh | None = None, state: TrainState | None = None,
                    frozen: nnx.State | None = None, minibatches: int = 1,
                    micro_batch_rows: int = 0, denominators: Callable[[Any], Any] | None = None,
                    skip_update: Callable[[dict[str, jax.Array]], jax.Array] | None = None
                    ) -> Callable[[TrainState, Any], tuple[TrainState, dict[str, jax.Array]]]:
  """Returns `step(state, batch) -> (state, metrics)`, jitted (and sharded on `mesh`).

  With `minibatches = n > 1`, each policy's `B` rows are split in order into n consecutive
  minibatches of `B / n` rows and the step makes n optimizer updates, one per minibatch, in a
  `lax.scan` (one epoch over the batch, as PPO's mini-batch updates); metrics are their means
  (`finite` their minimum), and the state's `step` still advances by one.

  `graphdef` comes from `nnx.split(module, <trainable filter>, ...)`; the model a loss sees is
  `nnx.merge(graphdef, params)` or `nnx.merge(graphdef, params, frozen)`. `metrics` are float32
  arrays of shape `[P]`: the loss's own metrics plus `loss`, `grad_norm` and `finite`. `frozen`
  params are passed to every call (an argument, not a compiled-in constant). With a mesh, pass
  a `state` to read its shardings. The input state is donated. Across processes each one
  passes the same whole batch (see `sharding.put_global`).

  With `micro_batch_rows = r > 0` (gradient accumulation), each update's rows are split in order
  into micro-batches of r rows, and a `lax.scan` sums their losses, metrics and gradients before
  the one optimizer update, so only one micro-batch's activations are live at a time. The loss
  is then called as `loss_fn(model, micro_batch, denominators=d)`, with `d = denominators(rows)`
  the normalisers of all the update's rows (its token count, row count, ...), and must be a sum
  over rows given `d` (its value and every metric): the sums over micro-batches then equal the
  one-batch loss, metrics and gradient, up to float rounding.

  `skip_update(metrics) -> bool[]`, given an update's (accumulated) loss metrics, makes that
  update a no-op when true: parameters and optimizer state (moments, step count) are kept, as a
  trainer that returns before `optimizer.step()` (e.g. PPO's approximate-KL early stop); the
  metric `update_skipped` records it. Unlike a non-finite update it is not a `skipped_steps`.
  """

  if minibatches < 1:
    raise ValueError(f"minibatches={minibatches} must be at least 1")
  if not isinstance(micro_batch_rows, int) or micro_batch_rows < 0:
    raise ValueError(f"micro_batch_rows={micro_batch_rows!r} must be a non-negative integer "
                     "(0: no gradient accumulation)")
  if micro_batch_rows and denominators is None:
    raise ValueError("micro_batch_rows > 0 needs `denominators`, the batch-wide normalisers of "
                     "the loss")

  def split(x, parts, what):
    if x.shape[0] % parts:
      raise ValueError(f"{x.shape[0]} rows do not split into {parts} {what}")
    return x.reshape((parts, x.shape[0] // parts) + x.shape[1:])

  def loss_and_grad(params, frozen, batch):
    def objective(trainable, rows, *normalisers):
      states = (trainable,) if frozen is None else (trainable, frozen)
      model = nnx.merge(graphdef, *states)
      if not normalisers:
        return loss_fn(model, rows)
      return loss_fn(model, rows, denominators=normalisers[0])

    value_and_grad = jax.value_and_grad(objective, has_aux=True)
    if not micro_batch_rows:
      return value_and_grad(params, batch)
    rows = jax.tree.leaves(batch)[0].shape[0]
    if rows % micro_batch_rows:
      raise ValueError(f"{rows} rows do not split into micro-batches of "
                       f"micro_batch_rows={micro_batch_rows}")
    parts = rows // micro_batch_rows
    normalisers = jax.lax.stop_gradient(denominators(batch))
    micro_batches = jax.tree.map(lambda x: split(x, parts, "micro-batches"), batch)
    first = jax.tree.map(lambda x: x[0], micro_batches)
    shapes = jax.eval_shape(value_and_grad, params, first, normalisers)
    # Sums in at least float32; cast back to the one-batch dtypes at the end.
    wide = lambda s: jnp.promote_types(s.dtype, jnp.float32) if jnp.issubdtype(
        s.dtype, jnp.floating) else s.dtype
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, wide(s)), shapes)

    def accumulate(total, micro_batch):
      out = value_and_grad(params, micro_batch, normalisers)
      return jax.tree.map(lambda t, o: t + o.astype(t.dtype), total, out), None

    total, _ = jax.lax.scan(accumulate, zeros, micro_batches)
    return jax.tree.map(lambda t, s: t.astype(s.dtype), total, shapes)

  def update_minibatch(params, opt_state, frozen, batch):
    (loss, metrics), grads = loss_and_grad(params, frozen, batch)
    chex.assert_rank(loss, 0)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    apply = finite
    if skip_update is not None:
      skipped = jnp.asarray(skip_update(metrics), bool)
      apply = finite & ~skipped
      metrics = {**metrics, "update_skipped": skipped}
    updates, new_opt_state = optimizer.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    keep_unless_skipped = lambda new, old: jnp.where(apply, new, old)
    params = jax.tree.map(keep_unless_skipped, new_params, params)
    opt_state = jax.tree.map(keep_unless_skipped, new_opt_state, opt_state)
    metrics = {**metrics, "loss": loss, "grad_norm": grad_norm, "finite": finite}
    return params, opt_state, jax.tree.map(lambda m: m.astype(jnp.float32), metrics)

  def update_one_policy(params, opt_state, frozen, batch):
    if minibatches == 1:
      return update_minibatch(params, opt_state, frozen, batch)

    def update(carry, minibatch):
      params, opt_state, metrics = update_minibatch(*carry, frozen, minibatch)
      return (params, opt_state), metrics

    minibatched = jax.tree.map(lambda x: split(x, minibatches, "minibatches"), batch)
    (params, opt_state), metrics = jax.lax.scan(update, (params, opt_state), minibatched)
    metrics = {name: value.min(0) if name == "finite" else value.mean(0)
               for name, value in metrics.items()}
    return params, opt_state, metrics

  def step(state: TrainState, batch: Any, frozen: nnx.State | None):
    params, opt_state, metrics = jax.vmap(update_one_policy, in_axes=(0, 0, None, 0))(
        state.params, state.opt_state, frozen, batch)
    skipped = state.skipped_steps + (metrics["finite"] == 0).astype(jnp.int32)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              skipped_steps=skipped)
    return new_state, metrics

  if mesh is None:
    jitted = jax.jit(step, donate_argnums=(0,))
    return lambda state, batch: jitted(state, batch, frozen)
  if state is None:
    raise ValueError("a sharded train step needs the train state to read its shardings")
  state_shardings = train_state_shardings(state, optimizer, mesh)
  frozen_shardings = None
  if frozen is not None:
    frozen_shardings = sharding.state_shardings(frozen, mesh, stacked=False)
    frozen = sharding.put_global(frozen, frozen_shardings)  # placed once, not every step
  batch_sharding = sharding.batch_sharding(mesh)
  jitted = jax.jit(step, in_shardings=(state_shardings, batch_sharding, frozen_shardings),
                   out_shardings=(state_shardings, sharding.replicated(mesh)),
                   donate_argnums=(0,))
  return lambda state, batch: jitted(state, sharding.put_global(batch, batch_sharding), frozen)
