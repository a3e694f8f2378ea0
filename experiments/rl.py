"""GRPO / AT-GRPO jobs: rollout with the current policies, grouped advantages, clipped update.

The base model is the task's tiny pretrained model (trained first if it is not cached). With
`policies.mapping` sending every role to 0 the policy is shared; one index per role gives the
role-specialised regime (P stacked policies, one vmapped update, each on its own rows).
"""
from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from algorithms import grpo
from envs.data.task_instances import load_instances
from envs.registry import get_task
from experiments import pretrain
from marft import sharding, trainer
from marft.logprobs import next_token_logprobs
from marft.models.hf import load_pretrained
from marft.policies import policy_params, stack_policies
from marft.rollout.engine import RolloutConfig, collect, model_sampler
from marft.tokenizers import CharTokenizer
from marft.train_step import init_train_state, make_optimizer, make_train_step

_MIN_ROWS = 64  # rows per policy are padded to a power of two, at least this


def loss(model: nnx.Module, batch: dict[str, jax.Array], cfg: Any
         ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """GRPO / AT-GRPO policy loss (Stronger Together, Sec. 4.2; DeepSeekMath, Eq. 3).

  L = agg_t[ -min(rho_t A, clip(rho_t, 1-eps, 1+eps) A) ] (+ beta KL_k3(pi || pi_ref)),
  rho_t = pi(y_t) / pi_behaviour(y_t), one advantage A per response broadcast to its tokens.
  """
  tokens = batch["tokens"]
  mask = batch["loss_mask"][:, 1:] * batch["row_weight"][:, None]
  logp = next_token_logprobs(model, tokens)
  old = batch["behavior_logp"][:, 1:]
  advantages = jnp.broadcast_to(batch["advantages"][:, None], logp.shape)
  per_token, clipped = grpo.clipped_surrogate(logp, old, advantages, clip_eps=cfg.clip_eps,
                                              dual_clip=cfg.get("dual_clip") or None)
  total = grpo.aggregate(per_token, mask, cfg.aggregation)
  metrics = {"clip_frac": grpo.aggregate(clipped, mask, "token-mean"),
             "approx_kl": grpo.aggregate(old - logp, mask, "token-mean")}
  if cfg.kl_coef:
    kl = grpo.aggregate(grpo.low_variance_kl(logp, batch["ref_logp"][:, 1:]), mask, "token-mean")
    total = total + cfg.kl_coef * kl
    metrics["kl"] = kl
  return total, metrics


def base_model(config: Any) -> tuple[nnx.Module, Any]:
  """The task's tiny base model, pretrained (and cached) on first use."""
  pretrain_config = pretrain.config_for(config.task.name)
  directory = pretrain.base_model_dir(pretrain_config)
  hf_dir = os.path.join(directory, "hf")
  if not os.path.exists(os.path.join(hf_dir, "config.json")):
    print(f"no base model for {config.task.name} yet: pretraining it in {directory}", flush=True)
    mesh = sharding.make_mesh(**pretrain_config.mesh)
    state = trainer.run(pretrain_config, directory, pretrain.build(pretrain_config, mesh))
    pretrain.export_base_model(pretrain_config, state, directory)
  return load_pretrained(hf_dir)


def _policy_batches(rows: dict[str, np.ndarray], policy_ids: np.ndarray, num_policies: int
                    ) -> dict[str, np.ndarray]:
  """Splits rows by policy into `[P, B, ...]`, padding each policy to a common power-of-two B
  with zero-weight rows (so shapes, and compilations, repeat)."""
  counts = [int((policy_ids == p).sum()) for p in range(num_policies)]
  width = max(_MIN_ROWS, 1 << (max(counts) - 1).bit_length())
  out = {}
  for name, values in rows.items():
    stacked = np.zeros((num_policies, width) + values.shape[1:], values.dtype)
    for p in range(num_policies):
      picked = values[policy_ids == p]
      stacked[p, :len(picked)] = picked
    out[name] = stacked
  return out


def build(config: Any, mesh: jax.sharding.Mesh) -> trainer.Job:
  """The RL job of `config` (see `experiments/configs/at_grpo_*.py`)."""
  task = get_task(config.task.name)
  task_cfg = {**task.default_config(), **dict(config.task.get("env", {}))}
  model, model_config = base_model(config)
  tokenizer = CharTokenizer(model_config.vocab_size)
  mapping = dict(config.policies.mapping)
  num_policies = max(mapping.values()) + 1
  optimizer = make_optimizer(config.optimizer.to_dict() | {"total_steps": config.total_steps})
  graphdef, params, _ = stack_policies(model, num_policies)
  state = init_train_state(params, optimizer, config.seed, mesh=mesh)
  algo = config.algo
  train_step = make_train_step(functools.partial(loss, cfg=algo), optimizer, graphdef,
                               mesh=mesh, state=state)
  rollout_config = RolloutConfig(k=algo.k, tree=algo.tree,
                                 max_new_tokens=config.rollout.max_new_tokens,
                                 temperature=config.rollout.temperature)
  kind = config.task.workflow

  def models_of(state):
    return [nnx.merge(graphdef, policy_params(state.params, p)) for p in range(num_policies)]

  def batch_fn(state):
    step = int(state.step)
    max_turns = grpo.max_turns_at(step + 1, config.curriculum.max_turns, config.curriculum.every)
    seeds = np.random.default_rng([config.seed, step]).integers(0, 2**31, config.task.num_tasks)
    workflows = [task.make_workflow(task.generate_task(int(s), "train", task_cfg), kind,
                                    task_cfg, max_turns) for s in seeds]
    samplers = [model_sampler(m, tokenizer, rollout_config) for m in models_of(state)]
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), step)
    rollout = collect(workflows, samplers, tokenizer, key, mapping=mapping, config=rollout_config)
    b = jax.tree.map(np.asarray, rollout.batch)
    rewards = np.asarray(grpo.mix_rewards(b.reward, b.team_reward, algo.alpha))
    groups = grpo.dense_group_ids(b.task_id, b.role_id, b.turn_id)
    advantages = np.asarray(grpo.group_advantages(rewards, groups, eps=algo.eps,
                                                  normalize_std=algo.normalize_std))
    weight = np.asarray(grpo.group_filter_mask(rewards, groups,
                                               drop_zero_variance=algo.drop_zero_variance))
    rows = {"tokens": b.tokens, "loss_mask": b.loss_mask, "behavior_logp": b.behavior_logp,
            "advantages": advantages.astype(np.float32), "row_weight": weight}
    batch = _policy_batches(rows, b.policy_id, num_policies)
    metrics = {k: v for k, v in rollout.metrics.items()
               if k.startswith(("rollout/", "train/reward"))}
    metrics["rollout/max_turns"] = max_turns
    metrics["rollout/kept_rows"] = float(weight.sum())
    return batch, metrics

  test_instances = load_instances(config.task.name, task_cfg, config.task.eval_tasks)

  def eval_fn(state):
    metrics = {}
    for name, temperature in (("greedy", 0.0), ("sampled", 1.0)):
      eval_config = RolloutConfig(k=1, tree=False, max_new_tokens=config.rollout.max_new_tokens,
                                  temperature=temperature)
      samplers = [model_sampler(m, tokenizer, eval_config) for m in models_of(state)]
      workflows = [task.make_workflow(t, kind, task_cfg, task_cfg["max_turns"])
                   for t in test_instances]
      rollout = collect(workflows, samplers, tokenizer, jax.random.key(config.seed),
                        mapping=mapping, config=eval_config)
      metrics[f"eval/{name}_success"] = rollout.metrics["rollout/success_rate"]
    metrics["eval/success_rate"] = metrics["eval/greedy_success"]
    return metrics

  return trainer.Job(state=state, train_step=train_step, batch_fn=batch_fn, eval_fn=eval_fn,
                     progress_keys=("eval/success_rate", "rollout/success_rate", "train/loss"))
