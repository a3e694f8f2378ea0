"""MARFT's agent-level PPO job (Liao et al. 2025): rollouts of a Flex-POMDP workflow, a critic
over trunk features, action- or token-level GAE across the agents' order, clipped PPO updates.

Each iteration: `algo.k` independent episodes per task with the current policies; the critic's
trunk (`critic.trunk`: the frozen base model, as MARFT's critic, or the acting policy itself,
detached) gives each row its features; the critic (`algorithms.marft_ppo.Critic`) scores them
in the `[episode, step, agent]` layout and `critic_credit` turns rewards into advantages and
value targets; then one stacked-policy PPO update (the approximate-KL early stop as a skipped
update, `agent_iteration_interval` as a per-role row weight; none in the first
`algo.critic_warmup_steps` steps, MARFT's warmup) and `critic.updates` Adam steps of the
critic, whose parameters and optimizer state live in the train state's `extra`.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from algorithms import marft_ppo
from envs.data.task_instances import load_instances
from experiments import common, rl
from marft import trainer, transcripts
from marft.logprobs import next_token_logprobs
from marft.rollout.engine import RolloutConfig, collect, model_sampler
from marft.sampling import shape_bucket
from marft.train_step import make_train_step

CREDITS = ("action", "token")
TRUNKS = ("frozen", "policy")


# ---------------------------------------------------------------------------------------------
# The policy loss.


def _token_mask(batch: dict[str, jax.Array]) -> jax.Array:
  return batch["loss_mask"][:, 1:] * batch["row_weight"][:, None]


def loss_denominators(batch: dict[str, jax.Array], cfg: Any) -> dict[str, jax.Array]:
  """The batch-wide count `policy_loss` averages over: trained actions (MARFT-A) or tokens
  (MARFT-T)."""
  mask = _token_mask(batch)
  if cfg.credit == "action":
    return {"count": (mask.sum(1) > 0).sum().astype(jnp.float32)}
  return {"count": mask.sum()}


def policy_loss(model: nnx.Module, batch: dict[str, jax.Array], cfg: Any,
                denominators: dict[str, jax.Array] | None = None
                ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """MARFT's PPO actor loss of one policy's rows (`marft_ppo.ppo_policy_loss`).

  MARFT-A (`credit="action"`, Sec. 4.2): an action's log-prob is the sum of its token log-probs,
  its ratio and advantage are one per action, its entropy the mean over its tokens. MARFT-T
  (Sec. 4.3): per-token ratios and advantages. `row_weight` 0 leaves a row out (padding, or an
  agent not trained this step).
  """
  mask = _token_mask(batch)
  logp, entropy = next_token_logprobs(model, batch["tokens"], with_entropy=True)
  old = batch["behavior_logp"][:, 1:]
  count = None if denominators is None else denominators["count"]
  if cfg.credit == "action":
    tokens = mask.sum(1)
    # The action's log-ratio summed token by token, passed against 0: sum(logp) - sum(old)
    # would cancel two large float32 numbers (~ -50 each) and lose the ratio's last digits.
    log_ratio = ((logp - old) * mask).sum(1)
    return marft_ppo.ppo_policy_loss(
        log_ratio, jnp.zeros_like(log_ratio), batch["advantages"],
        (entropy * mask).sum(1) / jnp.maximum(tokens, 1.0), (tokens > 0).astype(jnp.float32),
        clip_eps=cfg.clip_eps, entropy_coef=cfg.entropy_coef, count=count)
  return marft_ppo.ppo_policy_loss(logp, old, batch["advantages"][:, 1:], entropy, mask,
                                   clip_eps=cfg.clip_eps, entropy_coef=cfg.entropy_coef,
                                   count=count)


# ---------------------------------------------------------------------------------------------
# Features and the [episode, step, agent] layout.


def row_features(model: nnx.Module, tokens: jax.Array, prompt_lengths: jax.Array,
                 response_lengths: jax.Array, *, response_width: int) -> dict[str, jax.Array]:
  """Trunk features of each row (`tokens: int32[R, W]`, prompt then response), float32:
  `obs [R, D]` at the last prompt token, `act [R, D]` at the last response token, `tokens
  [R, L, D]` the state before each of the first L = `response_width` response tokens, `pooled
  [R, D]` the mean over the row's prompt and response."""
  hidden, _ = model.hidden_states(tokens)
  hidden = jax.lax.stop_gradient(hidden.astype(jnp.float32))
  r, w, _ = hidden.shape
  at = lambda index: jnp.take_along_axis(hidden, jnp.clip(index, 0, w - 1)[:, :, None], axis=1)
  first = prompt_lengths - 1
  ends = prompt_lengths + response_lengths
  valid = (jnp.arange(w)[None] < ends[:, None]).astype(jnp.float32)
  pooled = (hidden * valid[..., None]).sum(1) / jnp.maximum(valid.sum(1), 1.0)[:, None]
  return {"obs": at(first[:, None])[:, 0], "act": at((ends - 1)[:, None])[:, 0],
          "tokens": at(first[:, None] + jnp.arange(response_width)[None]), "pooled": pooled}


def layout(batch: Any, num_episodes: int, num_turns: int, num_roles: int,
           last_of_stage: np.ndarray) -> dict[str, np.ndarray]:
  """Where each row of a rollout goes in `[E, T, N]`, and the rewards, dones and mask there.

  A row is agent `role_id` at step `turn_id` of episode `episode_id`; the team reward of a
  stage is put on its last role (`last_of_stage[role]`), so parallel roles do not count it
  twice; `dones` is 1 at each episode's last step; `mask` marks the entries that acted.
  """
  e, t, n = (np.asarray(x, np.int64) for x in (batch.episode_id, batch.turn_id, batch.role_id))
  rewards = np.zeros((num_episodes, num_turns, num_roles), np.float32)
  mask = np.zeros_like(rewards)
  rewards[e, t, n] = np.asarray(batch.team_reward) * last_of_stage[n]
  mask[e, t, n] = 1.0
  last_turn = np.zeros(num_episodes, np.int64)
  np.maximum.at(last_turn, e, t)
  dones = np.zeros((num_episodes, num_turns), np.float32)
  dones[np.arange(num_episodes), last_turn] = 1.0
  return {"index": (e, t, n), "rewards": rewards, "dones": dones, "mask": mask}


def scatter(values: np.ndarray, index: tuple[np.ndarray, ...], shape: tuple[int, ...]
            ) -> np.ndarray:
  """Per-row `values [R, ...]` into a zero `[E, T, N, ...]` array at `index`."""
  out = np.zeros(shape + values.shape[1:], np.float32)
  out[index] = values
  return out


def explained_variance(predictions: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> float:
  """1 - Var(G - V) / Var(G) over the masked entries (1: perfect, 0: no better than the mean)."""
  m = mask > 0
  if m.sum() < 2 or np.var(targets[m]) == 0:
    return 0.0
  return float(1.0 - np.var(targets[m] - predictions[m]) / np.var(targets[m]))


def trunk_features(features_fn: Any, base: nnx.Module, models: list[nnx.Module], trunk: str,
                   tokens: np.ndarray, prompt_lengths: np.ndarray, response_lengths: np.ndarray,
                   policy_ids: np.ndarray) -> dict[str, np.ndarray]:
  """Each row's `features_fn` (`row_features`) features from its critic trunk: the frozen
  `base` model (`trunk="frozen"`) or its own policy's model (`"policy"`), one call per trunk
  over its rows padded to a `shape_bucket` (so shapes repeat)."""
  trunks = [base] if trunk == "frozen" else models
  owners = np.zeros_like(policy_ids) if trunk == "frozen" else policy_ids
  out = {}
  for p, model in enumerate(trunks):
    rows = np.flatnonzero(owners == p)
    if not len(rows):
      continue
    padded = shape_bucket(len(rows), 16)
    pick = lambda x: np.concatenate([x[rows], np.repeat(x[rows[:1]], padded - len(rows), 0)])
    got = features_fn(model, jnp.asarray(pick(tokens)), jnp.asarray(pick(prompt_lengths)),
                      jnp.asarray(pick(response_lengths)))
    for name, value in got.items():
      out.setdefault(name, np.zeros((len(tokens),) + value.shape[1:], np.float32))
      out[name][rows] = np.asarray(value)[:len(rows)]
  return out


def make_critic_step(critic: marft_ppo.Critic, critic_cfg: Any,
                     optimizer: optax.GradientTransformation, loss_weight: float = 1.0) -> Any:
  """`critic_step(extra, batch) -> (extra, metrics)`, jitted: `critic_cfg.updates` optimizer
  steps on `loss_weight * marft_ppo.critic_loss` over the same batch (a non-finite one keeps
  the parameters and is counted in `critic_skipped`); `extra` holds `critic` and `critic_opt`."""

  def objective(params, batch):
    value, metrics = marft_ppo.critic_loss(critic, params, batch, clip=critic_cfg.value_clip,
                                           huber_delta=critic_cfg.huber_delta)
    return loss_weight * value, metrics

  @jax.jit
  def critic_step(extra: dict[str, Any], batch: dict[str, jax.Array]):
    def update(carry, _):
      params, opt_state = carry
      (loss, metrics), grads = jax.value_and_grad(objective, has_aux=True)(params, batch)
      grad_norm = optax.tree.norm(grads)
      finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
      updates, new_opt_state = optimizer.update(grads, opt_state, params)
      keep = lambda new, old: jnp.where(finite, new, old)
      params = jax.tree.map(keep, optax.apply_updates(params, updates), params)
      opt_state = jax.tree.map(keep, new_opt_state, opt_state)
      return (params, opt_state), {**metrics, "value_grad_norm": grad_norm,
                                   "critic_skipped": (~finite).astype(jnp.float32)}

    (params, opt_state), metrics = jax.lax.scan(
        update, (extra["critic"], extra["critic_opt"]), None, length=critic_cfg.updates)
    metrics = {k: v.mean() if k != "critic_skipped" else v.sum() for k, v in metrics.items()}
    return {"critic": params, "critic_opt": opt_state}, metrics

  return critic_step


# ---------------------------------------------------------------------------------------------
# The job.


def check_config(config: Any) -> None:
  """The PPO-specific keys, checked before anything is built (one ConfigError each)."""
  algo, critic = config.algo, config.critic
  if algo.credit not in CREDITS:
    raise common.ConfigError(f"algo.credit={algo.credit!r}: choose from {CREDITS}")
  if critic.kind not in marft_ppo.CRITIC_KINDS:
    raise common.ConfigError(f"critic.kind={critic.kind!r}: choose from "
                             f"{marft_ppo.CRITIC_KINDS}")
  if critic.trunk not in TRUNKS:
    raise common.ConfigError(f"critic.trunk={critic.trunk!r}: choose from {TRUNKS}")
  if critic.kind in marft_ppo.MIXED_CRITICS and algo.credit == "token":
    raise common.ConfigError(f"critic.kind={critic.kind!r} gives one advantage per action: use "
                             "algo.credit='action' (token-level credit needs a shared or "
                             "per_agent critic)")
  if algo.k < 1:
    raise common.ConfigError(f"algo.k={algo.k}: at least one episode per task")
  if algo.minibatches not in (1, 2, 4, 8):
    raise common.ConfigError(f"algo.minibatches={algo.minibatches}: choose 1, 2, 4 or 8")
  if critic.updates < 1:
    raise common.ConfigError(f"critic.updates={critic.updates}: at least 1")


def build(config: Any, mesh: jax.sharding.Mesh) -> trainer.Job:
  """The MARFT PPO job of `config` (see `experiments/configs/marft_ppo.py`)."""
  check_config(config)
  task, task_cfg, make_workflow, roles_of, roles, model, model_config, tokenizer = rl.setup(config)
  if not callable(getattr(model, "hidden_states", None)):
    raise common.ConfigError(f"{type(model).__name__} exposes no hidden states: a value head "
                             "needs a model with `hidden_states(tokens)`")
  algo, critic_cfg = config.algo, config.critic
  mapping = dict(config.policies.mapping)
  num_policies = max(mapping.values()) + 1
  num_roles = len(roles)
  stages = make_workflow(task.generate_task(0, "test", task_cfg), config.task.workflow,
                         1).stages()
  last_of_stage = np.asarray([float(role == stage[-1]) for role in roles
                              for stage in stages if role in stage], np.float32)
  critic = marft_ppo.make_critic(critic_cfg.kind, num_roles, model_config.hidden_size,
                                 hidden_dims=tuple(critic_cfg.hidden_dims),
                                 embed_dim=critic_cfg.embed_dim,
                                 hypernet_hidden=critic_cfg.hypernet_hidden)
  critic_optimizer = optax.chain(optax.clip_by_global_norm(critic_cfg.max_grad_norm),
                                 optax.adam(critic_cfg.lr, eps=1e-5))
  critic_params = marft_ppo.init_critic(critic, jax.random.key(config.seed + 1))
  extra = {"critic": critic_params, "critic_opt": critic_optimizer.init(critic_params)}

  minibatches = algo.minibatches
  micro_batch_rows = common.micro_batch_rows(config)
  optimizer, graphdef, frozen, state = rl.stacked_policies(config, model, num_policies, mesh,
                                                           minibatches, extra)
  target_kl = algo.get("target_kl") or None
  policy_step = make_train_step(
      functools.partial(policy_loss, cfg=algo), optimizer, graphdef, mesh=mesh, state=state,
      frozen=frozen, minibatches=minibatches, micro_batch_rows=micro_batch_rows,
      denominators=functools.partial(loss_denominators, cfg=algo),
      skip_update=(None if target_kl is None
                   else functools.partial(marft_ppo.kl_exceeded, target_kl=target_kl)))

  critic_step = make_critic_step(critic, critic_cfg, critic_optimizer)

  warmup = algo.get("critic_warmup_steps", 0)

  def train_step(state, batch):
    if int(state.step) < warmup:  # MARFT's warmup: the critic learns before any actor step
      state, metrics = state.replace(step=state.step + 1), {}
    else:
      state, metrics = policy_step(state, batch["policy"])
    extra, critic_metrics = critic_step(state.extra, batch["critic"])
    return state.replace(extra=extra), {**metrics, **critic_metrics}

  @functools.partial(jax.jit, static_argnames=("token_level",))
  def credit_fn(params, features, rewards, dones, mask, lengths, token_level):
    outputs = marft_ppo.critic_outputs(critic, params, features)
    advantages, targets = marft_ppo.critic_credit(
        critic, outputs, rewards, dones, mask, lengths if token_level else None,
        gamma=algo.gamma, lam=algo.lam)
    return outputs, advantages, targets

  width = config.rollout.max_new_tokens
  features_fn = nnx.jit(functools.partial(row_features, response_width=width))
  rollout_config = RolloutConfig(k=algo.k, tree=False, max_new_tokens=width,
                                 temperature=config.rollout.temperature)
  kind = config.task.workflow
  max_turns = task_cfg["max_turns"]
  num_episodes = config.task.num_tasks * algo.k
  token_level = algo.credit == "token"
  keep_transcripts = transcripts.wanted(config)

  def models_of(state):
    return rl.policy_models(graphdef, state.params, frozen, num_policies)

  def features_of(models, tokens, prompt_lengths, response_lengths, policy_ids):
    return trunk_features(features_fn, model, models, critic_cfg.trunk, tokens, prompt_lengths,
                          response_lengths, policy_ids)

  def batch_fn(state):
    step = int(state.step)
    seeds = np.random.default_rng([config.seed, step]).integers(0, 2**31, config.task.num_tasks)
    workflows = [make_workflow(task.generate_task(int(s), "train", task_cfg), kind, max_turns)
                 for s in seeds]
    models = models_of(state)
    samplers = [model_sampler(m, tokenizer, rollout_config) for m in models]
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), step)
    rollout = collect(workflows, samplers, tokenizer, key, mapping=mapping,
                      config=rollout_config)
    b = jax.tree.map(np.asarray, rollout.batch)
    response_lengths = b.loss_mask.sum(1).astype(np.int32)
    prompt_lengths = b.loss_mask.argmax(1).astype(np.int32)
    placed = layout(b, num_episodes, max_turns, num_roles, last_of_stage)
    index, entry_mask = placed["index"], placed["mask"]
    grid = (num_episodes, max_turns, num_roles)
    rows = features_of(models, b.tokens, prompt_lengths, response_lengths, b.policy_id)
    features = {"obs": scatter(rows["obs"], index, grid)}
    if critic.mixed:
      features["act"] = scatter(rows["act"], index, grid)
      pooled = scatter(rows["pooled"], index, grid)
      features["state"] = pooled.sum(2) / np.maximum(entry_mask.sum(2), 1.0)[..., None]
    if token_level:
      features["tokens"] = scatter(rows["tokens"], index, grid)
    lengths = np.maximum(scatter(response_lengths.astype(np.float32), index, grid), 1)
    lengths = np.minimum(lengths, width).astype(np.int32)
    outputs, advantages, targets = (jax.tree.map(np.asarray, x) for x in credit_fn(
        state.extra["critic"], features, placed["rewards"], placed["dones"], entry_mask,
        lengths, token_level))

    trained = np.asarray(marft_ppo.training_agents(step, num_roles,
                                                   algo.agent_iteration_interval))
    row_weight = trained[b.role_id].astype(np.float32)
    if token_level:
      valid = np.arange(width) < lengths[..., None]
      credit_mask = valid * (entry_mask * trained)[..., None]
    else:
      credit_mask = entry_mask * trained
    normalized = np.asarray(marft_ppo.normalize_advantages(advantages, credit_mask))
    if token_level:  # response token j of a row sits at position prompt + j
      policy_rows_advantages = np.zeros_like(b.behavior_logp)
      rows_, js = np.nonzero(np.arange(width) < response_lengths[:, None])
      policy_rows_advantages[rows_, prompt_lengths[rows_] + js] = normalized[index][rows_, js]
    else:
      policy_rows_advantages = normalized[index]
    policy_rows = {"tokens": b.tokens, "loss_mask": b.loss_mask,
                   "behavior_logp": b.behavior_logp, "advantages": policy_rows_advantages,
                   "row_weight": row_weight}
    shuffle = np.random.default_rng([config.seed, step, 1]) if minibatches > 1 else None
    policy_batch = rl.policy_batches(policy_rows, b.policy_id, num_policies, shuffle,
                                     multiple=minibatches * max(micro_batch_rows, 1))

    if critic.mixed:
      old, value_mask = outputs["q_tot"], (entry_mask.sum(-1) > 0).astype(np.float32)
    elif token_level:
      old, value_mask = outputs["values"], valid * entry_mask[..., None]
    else:
      old, value_mask = outputs["values"], entry_mask
    critic_batch = {**features, "old": old, "targets": targets,
                    "mask": entry_mask if critic.mixed else value_mask}

    metrics = {k: v for k, v in rollout.metrics.items()
               if k.startswith(("rollout/", "train/reward"))}
    metrics["rollout/episodic_return"] = rl.episodic_return(rollout.batch)
    metrics["train/explained_variance"] = explained_variance(old, targets, value_mask)
    role_advantage = advantages if not token_level else (advantages * valid).sum(-1) / np.maximum(
        valid.sum(-1), 1)
    for i, role in enumerate(roles):
      m = entry_mask[:, :, i] > 0
      if m.any():
        metrics[f"train/advantage/{role}"] = float(role_advantage[:, :, i][m].mean())
        metrics[f"train/advantage_abs/{role}"] = float(np.abs(role_advantage[:, :, i][m]).mean())
    for t in range(max_turns):
      acted = entry_mask[:, t].sum(-1) > 0
      metrics[f"rollout/reward/turn{t + 1}"] = float(
          placed["rewards"][:, t].sum(-1)[acted].mean()) if acted.any() else 0.0
    if keep_transcripts:
      metrics["transcripts"] = transcripts.records(
          b, tokenizer, roles, advantages=policy_rows_advantages, weights=row_weight,
          episodes=rollout.transcripts)
    return {"policy": policy_batch, "critic": critic_batch}, metrics

  test_instances = load_instances(config.task.name, task_cfg, config.task.eval_tasks)
  views = rl.evaluation_views(config, roles_of)

  def eval_fn(state):
    return rl.evaluate(config, views, test_instances, make_workflow, max_turns, tokenizer,
                       models_of(state))

  return rl.policy_job(config, model_config, models_of, state=state, train_step=train_step,
                       batch_fn=batch_fn, eval_fn=eval_fn,
                       provenance={"task_settings": task_cfg},
                       progress_keys=("eval/greedy_success", "eval/greedy_return",
                                      "rollout/episodic_return"))
