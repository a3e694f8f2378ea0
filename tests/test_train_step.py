"""The stacked-policy train step: per-policy isolation, LoRA over a frozen base, non-finite skips."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from ml_collections import ConfigDict

from algorithms import sft
from marft.models.config import get_model_config
from marft.models.decoder import build_model
from marft.policies import policy_params, stack_policies
from marft.train_step import (init_train_state, learning_rate_schedule, make_optimizer,
                              make_train_step)

CONFIG = get_model_config("tiny", num_layers=1)


def _batch(policies, rows=4, length=10, seed=0):
  rng = np.random.default_rng(seed)
  return {"tokens": rng.integers(4, 100, (policies, rows, length)).astype(np.int32),
          "loss_mask": np.ones((policies, rows, length), np.float32)}


def _sgd_step(params, batch, graphdef, lr):
  """One plain SGD step of one policy, computed without the train step."""
  def objective(p):
    return sft.loss(nnx.merge(graphdef, p), batch)[0]
  loss, grads = jax.value_and_grad(objective)(params)
  return loss, jax.tree.map(lambda p, g: p - lr * g, params, grads)


def test_each_policy_trains_only_on_its_rows():
  graphdef, params, _ = stack_policies(build_model(CONFIG), 2)
  optimizer = optax.sgd(0.1)
  state = init_train_state(params, optimizer, seed=0)
  batch = _batch(2)
  expected = [_sgd_step(policy_params(params, p), jax.tree.map(lambda x: x[p], batch),
                        graphdef, 0.1) for p in range(2)]
  step = make_train_step(sft.loss, optimizer, graphdef)
  state, metrics = step(state, batch)
  assert int(state.step) == 1
  for p in range(2):
    np.testing.assert_allclose(metrics["loss"][p], expected[p][0], rtol=1e-6)
    for got, want in zip(jax.tree.leaves(policy_params(state.params, p)),
                         jax.tree.leaves(expected[p][1])):
      np.testing.assert_allclose(got, want, atol=1e-6)
  assert float(metrics["loss"][0]) != float(metrics["loss"][1])


def test_minibatches_are_sequential_sgd_steps_on_consecutive_row_slices():
  graphdef, params, _ = stack_policies(build_model(CONFIG), 2)
  optimizer = optax.sgd(0.1)
  batch = _batch(2, rows=6)
  expected = []
  for p in range(2):
    policy, losses = policy_params(params, p), []
    for rows in (slice(0, 2), slice(2, 4), slice(4, 6)):
      loss, policy = _sgd_step(policy, jax.tree.map(lambda x: x[p, rows], batch), graphdef, 0.1)
      losses.append(loss)
    expected.append((np.mean(losses), policy))
  state = init_train_state(params, optimizer, seed=0)
  with pytest.raises(ValueError, match="do not split into 4 minibatches"):
    make_train_step(sft.loss, optimizer, graphdef, minibatches=4)(state, batch)
  state, metrics = make_train_step(sft.loss, optimizer, graphdef, minibatches=3)(state, batch)
  assert int(state.step) == 1 and metrics["loss"].shape == (2,)
  for p in range(2):
    np.testing.assert_allclose(metrics["loss"][p], expected[p][0], rtol=1e-5)
    for got, want in zip(jax.tree.leaves(policy_params(state.params, p)),
                         jax.tree.leaves(expected[p][1])):
      np.testing.assert_allclose(got, want, atol=1e-5)


def test_lora_only_updates_adapters_and_shares_the_frozen_base():
  model = build_model(CONFIG.replace(lora_rank=2, lora_targets=("q_proj", "v_proj")))
  graphdef, lora, base = stack_policies(model, 3, lora_only=True)
  assert {len(x.shape) for x in jax.tree.leaves(base)} <= {1, 2}  # not stacked
  optimizer = optax.adam(1e-2)
  state = init_train_state(lora, optimizer, seed=0)
  step = make_train_step(sft.loss, optimizer, graphdef, frozen=base)
  before = jax.tree.map(np.asarray, lora)
  state, metrics = step(state, _batch(3))
  changed = [np.abs(a - np.asarray(b)).max() for a, b in
             zip(jax.tree.leaves(before), jax.tree.leaves(state.params))]
  assert max(changed) > 0  # adapters moved (B from zero, then A)
  assert np.all(np.isfinite(metrics["loss"]))


@pytest.mark.parametrize("remat", ["block", "dots"])
def test_remat_with_lora_adapters_gives_the_same_update(remat):
  """Per-policy LoRA over a frozen base under remat (the frozen weights come from outside the
  vmapped policy's trace): the same loss and adapter update as without remat."""
  results = []
  for mode in ("none", remat):
    model = build_model(CONFIG.replace(lora_rank=2, remat=mode), seed=1)
    graphdef, lora, base = stack_policies(model, 2, lora_only=True)
    optimizer = optax.sgd(0.5)
    step = make_train_step(sft.loss, optimizer, graphdef, frozen=base)
    state, metrics = step(init_train_state(lora, optimizer, seed=0), _batch(2))
    state, metrics = step(state, _batch(2, seed=1))  # B is nonzero after the first step
    results.append((np.asarray(metrics["loss"]), jax.tree.map(np.asarray, state.params)))
  np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(results[1][1]), jax.tree.leaves(results[0][1])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_non_finite_loss_skips_that_policy_and_counts_it():
  graphdef, params, _ = stack_policies(build_model(CONFIG), 2)
  optimizer = optax.adam(1e-2)
  state = init_train_state(params, optimizer, seed=0)

  def poisoned_loss(model, batch):
    loss, metrics = sft.loss(model, batch)
    return jnp.where(batch["poison"], jnp.nan, loss), metrics

  step = make_train_step(poisoned_loss, optimizer, graphdef)
  before = jax.tree.map(np.asarray, params)
  batch = {**_batch(2), "poison": np.array([True, False])}
  state, metrics = step(state, batch)
  np.testing.assert_array_equal(np.asarray(metrics["finite"]), [0.0, 1.0])
  np.testing.assert_array_equal(np.asarray(state.skipped_steps), [1, 0])
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(a[0], np.asarray(b)[0])  # policy 0 untouched
  assert max(np.abs(a[1] - np.asarray(b)[1]).max()
             for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.params))) > 0
  assert int(jax.tree.leaves(state.opt_state)[0][0]) == 0  # its Adam count did not advance


def test_schedule_and_weight_decay_mask():
  cfg = ConfigDict(dict(lr=1.0, total_steps=110, warmup_steps=10, schedule="cosine"))
  schedule = learning_rate_schedule(cfg)
  np.testing.assert_allclose([schedule(0), schedule(5), schedule(10)], [0.0, 0.5, 1.0])
  np.testing.assert_allclose(schedule(60), 0.5 * (1 + np.cos(np.pi * 0.5)), atol=1e-6)
  np.testing.assert_allclose(schedule(110), 0.0, atol=1e-6)
  with pytest.raises(ValueError, match="schedule"):
    learning_rate_schedule(dict(lr=1.0, total_steps=5, schedule="step"))
  # Weight decay touches matrices only: with zero gradients, vectors stay, matrices shrink.
  optimizer = make_optimizer(dict(lr=0.1, total_steps=10, weight_decay=0.5))
  params = {"w": jnp.ones((2, 2)), "b": jnp.ones((2,))}
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = optimizer.update(zeros, optimizer.init(params), params)
  np.testing.assert_allclose(updates["w"], -0.1 * 0.5 * np.ones((2, 2)), rtol=1e-6)
  np.testing.assert_array_equal(updates["b"], np.zeros(2))


def _ragged_batch(policies, rows, length, seed):
  """Rows with different numbers of target tokens (one with none) and one zero-weight row."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(4, 100, (policies, rows, length)).astype(np.int32)
  starts = rng.integers(1, length - 1, (policies, rows))
  ends = np.minimum(starts + rng.integers(1, length, (policies, rows)), length)
  position = np.arange(length)
  mask = ((position >= starts[..., None]) & (position < ends[..., None])).astype(np.float32)
  mask[:, 1] = 0.0  # a row without tokens
  weight = np.ones((policies, rows), np.float32)
  weight[:, 2] = 0.0  # a filtered row
  return {"tokens": tokens, "loss_mask": mask, "row_weight": weight,
          "advantages": rng.normal(size=(policies, rows)).astype(np.float32),
          "behavior_logp": (np.log(1 / 128) + 0.3 * rng.normal(size=(policies, rows, length))
                            ).astype(np.float32),
          "ref_logp": (np.log(1 / 128) + 0.3 * rng.normal(size=(policies, rows, length))
                       ).astype(np.float32)}


def _accumulation_case(loss_fn, denominators, batch, metric_names, param_atol=1e-6):
  graphdef, params, _ = stack_policies(build_model(CONFIG), 2)
  optimizer, lr, rows = optax.sgd(1.0), 1.0, batch["tokens"].shape[1]
  expected = []
  for p in range(2):  # the one-batch update, computed without the train step
    policy = policy_params(params, p)
    objective = lambda q: loss_fn(nnx.merge(graphdef, q), jax.tree.map(lambda x: x[p], batch))
    (loss, metrics), grads = jax.value_and_grad(objective, has_aux=True)(policy)
    expected.append((loss, metrics, jax.tree.map(lambda q, g: q - lr * g, policy, grads)))
  for micro_batch_rows in (0, rows // 4):
    state = init_train_state(jax.tree.map(jnp.copy, params), optimizer, seed=0)
    step = make_train_step(loss_fn, optimizer, graphdef, micro_batch_rows=micro_batch_rows,
                           denominators=denominators)
    state, metrics = step(state, batch)
    for p in range(2):
      np.testing.assert_allclose(metrics["loss"][p], expected[p][0], rtol=1e-6, atol=1e-6)
      for name in metric_names:
        np.testing.assert_allclose(metrics[name][p], expected[p][1][name], rtol=1e-6, atol=1e-6)
      for got, want in zip(jax.tree.leaves(policy_params(state.params, p)),
                           jax.tree.leaves(expected[p][2])):
        np.testing.assert_allclose(got, want, rtol=0, atol=param_atol)


@pytest.mark.parametrize("aggregation", ["token-mean", "sequence-mean"])
def test_micro_batches_give_the_one_batch_rl_update(aggregation):
  from experiments import rl
  cfg = ConfigDict(dict(clip_eps=0.2, aggregation=aggregation, kl_coef=0.1, dual_clip=3.0))
  loss_fn = lambda model, batch, **kw: rl.loss(model, batch, cfg, **kw)
  _accumulation_case(loss_fn, rl.loss_denominators, _ragged_batch(2, 8, 12, seed=1),
                     ("clip_frac", "approx_kl", "kl"))


def test_micro_batches_give_the_one_batch_sft_update():
  batch = _ragged_batch(2, 8, 12, seed=2)
  batch = {"tokens": batch["tokens"], "loss_mask": batch["loss_mask"]}
  _accumulation_case(sft.loss, sft.loss_denominators, batch, ("tokens",))


def test_micro_batch_rows_are_validated():
  graphdef, params, _ = stack_policies(build_model(CONFIG), 1)
  optimizer = optax.sgd(0.1)
  with pytest.raises(ValueError, match="non-negative"):
    make_train_step(sft.loss, optimizer, graphdef, micro_batch_rows=-2,
                    denominators=sft.loss_denominators)
  with pytest.raises(ValueError, match="denominators"):
    make_train_step(sft.loss, optimizer, graphdef, micro_batch_rows=2)
  step = make_train_step(sft.loss, optimizer, graphdef, micro_batch_rows=3,
                         denominators=sft.loss_denominators)
  with pytest.raises(ValueError, match="micro_batch_rows=3"):
    step(init_train_state(params, optimizer, seed=0), _batch(1, rows=4))
  from experiments import common, rl
  for bad in (-1, 2.0, True):
    with pytest.raises(common.ConfigError, match="algo.micro_batch_rows"):
      common.micro_batch_rows(ConfigDict({"algo": {"micro_batch_rows": bad}}))
  with pytest.raises(common.ConfigError, match="does not divide the 64 rows"):
    common.micro_batch_rows(ConfigDict({"algo": {"micro_batch_rows": 24}}), 64)
  assert common.micro_batch_rows(ConfigDict({"algo": {}})) == 0
  # RL rows are padded (with zero-weight rows) to a multiple of minibatches * micro_batch_rows.
  padded = rl.policy_batches({"x": np.ones(5, np.float32)}, np.zeros(5, int), 1, multiple=40)
  assert padded["x"].shape == (1, 40) and padded["x"].sum() == 5


def test_skip_update_keeps_parameters_and_optimizer_state():
  """PPO's approximate-KL stop returns before the optimizer step: Adam's moments and count do
  not move either (a zero gradient would still move the parameters through the momentum)."""
  graphdef, params, _ = stack_policies(build_model(CONFIG), 2)
  optimizer = optax.adam(0.1)
  batch = _batch(2)
  state = init_train_state(params, optimizer, seed=0)
  state, _ = make_train_step(sft.loss, optimizer, graphdef)(state, batch)  # momentum != 0
  before = jax.tree.map(np.asarray, (state.params, state.opt_state))
  skip_policy_1 = lambda metrics: metrics["loss"] > -1.0  # every loss is positive: skip all
  step = make_train_step(lambda m, b: (sft.loss(m, b)[0], {"loss": sft.loss(m, b)[0]}),
                         optimizer, graphdef, skip_update=skip_policy_1)
  state, metrics = step(state, batch)
  np.testing.assert_array_equal(metrics["update_skipped"], [1.0, 1.0])
  for got, want in zip(jax.tree.leaves((state.params, state.opt_state)), jax.tree.leaves(before)):
    np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(state.skipped_steps, [0, 0])  # not a non-finite skip
  keep = make_train_step(sft.loss, optimizer, graphdef, skip_update=lambda m: m["tokens"] < 0)
  state, metrics = keep(state, batch)
  np.testing.assert_array_equal(metrics["update_skipped"], [0.0, 0.0])
  moved = [not np.array_equal(g, w) for g, w in zip(jax.tree.leaves(state.params),
                                                    jax.tree.leaves(before[0]))]
  assert all(moved)


@pytest.mark.parametrize("credit", ["action", "token"])
def test_micro_batches_give_the_one_batch_ppo_update(credit):
  """MARFT's actor loss with gradient accumulation: the batch-wide action or token count."""
  from experiments import ppo
  cfg = ConfigDict(dict(credit=credit, clip_eps=0.2, entropy_coef=0.01))
  batch = _ragged_batch(2, 8, 12, seed=3)
  if credit == "token":
    batch["advantages"] = np.random.default_rng(4).normal(size=batch["tokens"].shape).astype(
        np.float32)
  loss_fn = lambda model, b, **kw: ppo.policy_loss(model, b, cfg, **kw)
  # MARFT-A's per-action ratios (exp of up to 11 summed log-ratios) scale the gradient, and
  # float32 rounding of the micro-batch sums with it (measured: 2.6e-6 after an lr-1 step).
  _accumulation_case(loss_fn, lambda b: ppo.loss_denominators(b, cfg), batch,
                     ("approx_kl", "clip_frac", "entropy"),
                     param_atol=1e-5 if credit == "action" else 1e-6)
