"""The MAPoRL job (Park et al. 2025): verifier-scored multi-agent discussions, each agent's
answers rewarded by the influence-aware reward plus the collaboration incentives, and each
agent's policy (with its value head) trained by PPO on its own responses.

Each iteration: `algo.k` discussions per question with the current policies, the verifier
(`experiments.verifier.load`; `verifier.kind = stand_in`: the discussion's nearly exact stand-in
scores instead) scoring every answer as it is given (the scores are shown at the next turn);
answer rewards `maporl.discussion_rewards` over the `[discussion, turn, agent]` grid; per
response token the reward -kl_coef * KL(pi || pi_ref) plus the answer's reward on its last token
(`maporl.token_rewards`, the reference model the base); token values from one value head per
agent on the frozen base trunk (`critic.kind = per_agent`); `maporl.response_gae` (gamma 1,
lambda 0.95), advantages whitened per (turn, agent) (`answer_credit`); one clipped PPO update of the
stacked policies (`experiments.ppo.policy_loss`, token level, no entropy bonus) and
`critic.updates` steps of the clipped value loss weighted by `algo.vf_coef`.

Evaluation (greedy and temperature 1, on the fixed test questions): accuracy at every turn of
the trained team (`eval/<mode>_turn<t>_accuracy`) and of each trained agent discussing alone
(one agent revising over the same turns, `eval/alone<p>/...`), the ablation of the paper's
claim that the gain comes from collaboration.
"""
from __future__ import annotations

import functools
import os
import types
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from algorithms import maporl, marft_ppo
from envs.data.task_instances import load_instances
from experiments import common, ppo, rl, verifier
from marft import trainer, transcripts
from marft.logprobs import next_token_logprobs
from marft.models import heads
from marft.rollout.engine import RolloutConfig, collect, model_sampler
from marft.sampling import shape_bucket
from marft.train_step import make_train_step

WORKFLOW = "discussion"
# `model`: a trained verifier (`experiments.verifier`); `stand_in`: the discussion's stand-in
# scores (`envs.discussion.stand_in_score`, nearly exact: AUC 1 - 1/60), the ablation that
# separates the verifier's quality from the method.
VERIFIER_KINDS = ("model", "stand_in")


def check_config(config: Any) -> None:
  """The MAPoRL-specific keys, checked before anything is built (one ConfigError each)."""
  algo = config.algo
  if config.task.workflow != WORKFLOW:
    raise common.ConfigError(f"task.workflow={config.task.workflow!r}: MAPoRL trains the "
                             f"{WORKFLOW!r} workflow")
  turns = config.task.get("env", {}).get("max_turns", 1)
  if not isinstance(turns, int) or turns < 1:
    raise common.ConfigError(f"task.env.max_turns={turns!r}: a discussion needs at least one "
                             "turn")
  if len(tuple(algo.alphas)) != 4:
    raise common.ConfigError(f"algo.alphas={tuple(algo.alphas)}: four incentives (a0..a3)")
  if algo.k < 1:
    raise common.ConfigError(f"algo.k={algo.k}: at least one discussion per question")
  if algo.minibatches not in (1, 2, 4, 8):
    raise common.ConfigError(f"algo.minibatches={algo.minibatches}: choose 1, 2, 4 or 8")
  if config.critic.updates < 1:
    raise common.ConfigError(f"critic.updates={config.critic.updates}: at least 1")
  kind = config.verifier.get("kind", "model")
  if kind not in VERIFIER_KINDS:
    raise common.ConfigError(f"verifier.kind={kind!r}: choose from {VERIFIER_KINDS}")
  if not 0.0 <= algo.influence_gamma <= 1.0:
    raise common.ConfigError(f"algo.influence_gamma={algo.influence_gamma}: in [0, 1]")


def make_scorer(config: Any, vocab_size: int, pad_id: int) -> Any:
  """The rollout engine's scorer of `config.verifier`; None for the stand-in scores."""
  if config.verifier.get("kind", "model") == "stand_in":
    return None
  return heads.make_scorer(verifier.load(config, vocab_size), pad_id)


def turn_accuracy(batch: Any, num_turns: int) -> list[float]:
  """The mean correctness (local reward) of the answers at each turn of a rollout."""
  reward, turn = np.asarray(batch.reward), np.asarray(batch.turn_id)
  return [float(reward[turn == t].mean()) if (turn == t).any() else 0.0
          for t in range(num_turns)]


def build(config: Any, mesh: jax.sharding.Mesh) -> trainer.Job:
  """The MAPoRL job of `config` (see `experiments/configs/maporl.py`)."""
  check_config(config)
  setup = rl.setup(config)
  task, task_cfg, roles, model, tokenizer = (setup.task, setup.task_cfg, setup.roles,
                                             setup.model, setup.tokenizer)
  if not callable(getattr(model, "hidden_states", None)):
    raise common.ConfigError(f"{type(model).__name__} exposes no hidden states: value heads "
                             "need a model with `hidden_states(tokens)`")
  scorer = make_scorer(config, setup.model_config.vocab_size, tokenizer.pad_id)
  algo, critic_cfg = config.algo, config.critic
  mapping = dict(config.policies.mapping)
  num_policies = max(mapping.values()) + 1
  num_roles, max_turns = len(roles), task_cfg["max_turns"]
  style = rl.prompt_style(config, task)

  critic = marft_ppo.make_critic("per_agent", num_roles, setup.model_config.hidden_size,
                                 hidden_dims=tuple(critic_cfg.hidden_dims))
  critic_optimizer = optax.chain(optax.clip_by_global_norm(critic_cfg.max_grad_norm),
                                 optax.adam(critic_cfg.lr, eps=1e-5))
  critic_params = marft_ppo.init_critic(critic, jax.random.key(config.seed + 1))
  extra = {"critic": critic_params, "critic_opt": critic_optimizer.init(critic_params)}
  critic_step = ppo.make_critic_step(critic, critic_cfg, critic_optimizer,
                                     loss_weight=algo.vf_coef)

  minibatches = algo.minibatches
  micro_batch_rows = common.micro_batch_rows(config)
  optimizer, graphdef, frozen, state = rl.stacked_policies(config, model, num_policies, mesh,
                                                           minibatches, extra)
  # Token-level PPO without an entropy bonus (TRL's PPOv2, which MAPoRL trains with).
  ppo_cfg = types.SimpleNamespace(credit="token", clip_eps=algo.clip_eps, entropy_coef=0.0)
  policy_step = make_train_step(
      functools.partial(ppo.policy_loss, cfg=ppo_cfg), optimizer, graphdef, mesh=mesh,
      state=state, frozen=frozen, minibatches=minibatches, micro_batch_rows=micro_batch_rows,
      denominators=functools.partial(ppo.loss_denominators, cfg=ppo_cfg))

  def train_step(state, batch):
    state, metrics = policy_step(state, batch["policy"])
    extra, critic_metrics = critic_step(state.extra, batch["critic"])
    return state.replace(extra=extra), {**metrics, **critic_metrics}

  width = config.rollout.max_new_tokens
  features_fn = nnx.jit(functools.partial(ppo.row_features, response_width=width))
  reference_logp = nnx.jit(next_token_logprobs)
  values_fn = jax.jit(lambda params, features: marft_ppo.critic_outputs(
      critic, params, features)["values"])
  rollout_config = RolloutConfig(k=algo.k, tree=False, max_new_tokens=width,
                                 temperature=config.rollout.temperature)
  num_episodes = config.task.num_tasks * algo.k
  grid = (num_episodes, max_turns, num_roles)
  keep_transcripts = transcripts.wanted(config)

  def models_of(state):
    return rl.policy_models(graphdef, state.params, frozen, num_policies)

  def batch_fn(state):
    step = int(state.step)
    seeds = np.random.default_rng([config.seed, step]).integers(0, 2**31, config.task.num_tasks)
    workflows = [setup.make_workflow(task.generate_task(int(s), "train", task_cfg), WORKFLOW,
                                     max_turns) for s in seeds]
    models = models_of(state)
    samplers = [model_sampler(m, tokenizer, rollout_config) for m in models]
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), step)
    rollout = collect(workflows, samplers, tokenizer, key, mapping=mapping,
                      config=rollout_config, scorer=scorer)
    b = jax.tree.map(np.asarray, rollout.batch)
    n_rows = b.num_rows
    response_lengths = b.loss_mask.sum(1).astype(np.int32)
    prompt_lengths = b.loss_mask.argmax(1).astype(np.int32)
    index = grid_index(b)

    # Each row's response tokens (j < L) against the base model, for the KL reward.
    padded = np.zeros((shape_bucket(n_rows, 16),) + b.tokens.shape[1:], np.int32)
    padded[:n_rows] = b.tokens
    ref = np.zeros_like(b.behavior_logp)
    ref[:, 1:] = np.asarray(reference_logp(model, jnp.asarray(padded)))[:n_rows]
    positions = np.minimum(prompt_lengths[:, None] + np.arange(width)[None], b.tokens.shape[1] - 1)
    valid = (np.arange(width)[None] < response_lengths[:, None]).astype(np.float32)
    take = lambda x: np.take_along_axis(x, positions, axis=1) * valid
    kl = take(b.behavior_logp) - take(ref)

    rows = ppo.trunk_features(features_fn, model, models, "frozen", b.tokens, prompt_lengths,
                              response_lengths, b.policy_id)
    features = {"obs": ppo.scatter(rows["obs"], index, grid),
                "tokens": ppo.scatter(rows["tokens"], index, grid)}
    values = np.asarray(values_fn(state.extra["critic"], features))[index] * valid
    answer_rewards, token_advantages, returns = answer_credit(b, kl, values, valid, grid, algo)
    policy_rows = {"tokens": b.tokens, "loss_mask": b.loss_mask,
                   "behavior_logp": b.behavior_logp, "advantages": token_advantages,
                   "row_weight": np.ones(n_rows, np.float32)}
    shuffle = np.random.default_rng([config.seed, step, 1]) if minibatches > 1 else None
    policy_batch = rl.policy_batches(policy_rows, b.policy_id, num_policies, shuffle,
                                     multiple=minibatches * max(micro_batch_rows, 1))
    critic_batch = {**features, "old": ppo.scatter(values, index, grid),
                    "targets": ppo.scatter(returns, index, grid),
                    "mask": ppo.scatter(valid, index, grid)}

    metrics = {k: v for k, v in rollout.metrics.items() if k.startswith("rollout/")}
    for t, accuracy in enumerate(turn_accuracy(b, max_turns)):
      metrics[f"rollout/turn{t + 1}_accuracy"] = accuracy
    metrics["train/answer_reward"] = float(answer_rewards.mean())
    metrics["train/verifier_score"] = float(b.score.mean())
    metrics["train/penalised_answers"] = float(b.invalid.sum())
    metrics["train/kl"] = float((kl * valid).sum() / max(valid.sum(), 1.0))
    metrics["train/explained_variance"] = ppo.explained_variance(values, returns, valid)
    for i, role in enumerate(roles):
      mine = b.role_id == i
      metrics[f"train/answer_reward/{role}"] = float(answer_rewards[mine].mean())
    if keep_transcripts:
      metrics["transcripts"] = transcripts.records(
          b, tokenizer, roles, advantages=token_advantages, weights=policy_rows["row_weight"],
          groups=whitening_groups(b, num_roles), episodes=rollout.transcripts)
    return {"policy": policy_batch, "critic": critic_batch}, metrics

  test_instances = load_instances(config.task.name, task_cfg, config.task.eval_tasks)
  alone_cfg = {**task_cfg, "agents": 1}

  def eval_fn(state):
    models = models_of(state)
    views = {"": (task_cfg, mapping)}
    for p in range(num_policies):
      views[f"alone{p}/"] = (alone_cfg, {"agent1": p})
    metrics = {}
    for prefix, (cfg, view_mapping) in views.items():
      for mode, temperature in (("greedy", 0.0), ("sampled", 1.0)):
        eval_config = RolloutConfig(k=1, tree=False, max_new_tokens=width,
                                    temperature=temperature)
        samplers = [model_sampler(m, tokenizer, eval_config) for m in models]
        workflows = [task.make_workflow(t, WORKFLOW, cfg, max_turns, style)
                     for t in test_instances]
        rollout = collect(workflows, samplers, tokenizer, jax.random.key(config.seed),
                          mapping=view_mapping, config=eval_config, scorer=scorer)
        accuracy = turn_accuracy(rollout.batch, max_turns)
        for t, value in enumerate(accuracy):
          metrics[f"eval/{prefix}{mode}_turn{t + 1}_accuracy"] = value
        metrics[f"eval/{prefix}{mode}_accuracy"] = accuracy[-1]
        metrics[f"eval/{prefix}{mode}_success"] = rollout.metrics["rollout/success_rate"]
        metrics[f"eval/{prefix}{mode}_invalid_rate"] = rollout.metrics["rollout/invalid_rate"]
    metrics["eval/success_rate"] = metrics["eval/greedy_success"]
    return metrics

  return rl.policy_job(config, setup.model_config, models_of, state=state,
                       train_step=train_step, batch_fn=batch_fn, eval_fn=eval_fn,
                       provenance={"verifier": ("stand_in" if scorer is None
                                                else os.path.abspath(verifier.path_of(config))),
                                   "task_settings": task_cfg},
                       progress_keys=("eval/greedy_accuracy", "rollout/turn3_accuracy",
                                      "train/answer_reward"))


def grid_index(batch: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Each row's (discussion, turn, agent) cell of the `[E, T, A]` grid."""
  return (batch.episode_id.astype(np.int64), batch.turn_id.astype(np.int64),
          batch.role_id.astype(np.int64))


def whitening_groups(batch: Any, num_roles: int) -> np.ndarray:
  """The (turn, agent) group each row's advantages are whitened in, as `turn * A + agent`."""
  return (batch.turn_id * num_roles + batch.role_id).astype(np.int32)


def answer_credit(batch: Any, kl: np.ndarray, values: np.ndarray, valid: np.ndarray,
                  grid: tuple[int, int, int], algo: Any
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """A rollout's credit (MAPoRL, Sec. 4.2-4.4): each row's answer reward `[R]`
  (`maporl.discussion_rewards` over the `grid = (E, T, A)` of its verifier `score`, correctness
  `reward` and `invalid`), its token advantages `[R, tokens]` at its response positions (token
  rewards, GAE, whitened per (turn, agent)) and its value targets `[R, L]`; `kl`, `values` and
  `valid` are `[R, L]` over each row's first L response tokens."""
  index = grid_index(batch)
  on_grid = lambda x: ppo.scatter(np.asarray(x, np.float32), index, grid)
  rewards = np.asarray(_answer_rewards(
      on_grid(batch.score), on_grid(batch.reward), on_grid(batch.invalid),
      gamma=float(algo.influence_gamma), alphas=tuple(float(a) for a in algo.alphas),
      penalty=float(algo.penalty)))[index]
  groups = whitening_groups(batch, grid[2])
  advantages, returns = (np.asarray(x) for x in _credit(
      rewards, kl, values, valid, groups, num_groups=grid[1] * grid[2],
      kl_coef=float(algo.kl_coef), gamma=float(algo.gamma), lam=float(algo.lam)))
  prompt_lengths = batch.loss_mask.argmax(1)
  token_advantages = np.zeros(batch.loss_mask.shape, np.float32)
  r, j = np.nonzero(valid)
  token_advantages[r, prompt_lengths[r] + j] = advantages[r, j]
  return rewards, token_advantages, returns


_answer_rewards = jax.jit(maporl.discussion_rewards, static_argnames=("gamma", "alphas",
                                                                       "penalty"))


@functools.partial(jax.jit, static_argnames=("num_groups", "kl_coef", "gamma", "lam"))
def _credit(scores: jax.Array, kl: jax.Array, values: jax.Array, mask: jax.Array,
            groups: jax.Array, *, num_groups: int, kl_coef: float, gamma: float, lam: float
            ) -> tuple[jax.Array, jax.Array]:
  """Token rewards -> GAE -> advantages whitened per (turn, agent), and the value targets."""
  rewards = maporl.token_rewards(scores, kl, mask, kl_coef=kl_coef)
  advantages, returns = maporl.response_gae(rewards, values, mask, gamma=gamma, lam=lam)
  return maporl.whiten_per_group(advantages, mask, groups, num_groups), returns
