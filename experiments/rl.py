"""GRPO / AT-GRPO jobs: rollout with the current policies, grouped advantages, clipped update.

The base model is the task's tiny pretrained model (trained first if it is not cached). With
`policies.mapping` sending every role to 0 the policy is shared; one index per role gives the
role-specialised regime (P stacked policies, one vmapped update, each on its own rows).
"""
from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from algorithms import grpo
from algorithms.prm import agentprm
from envs.data.task_instances import load_instances
from envs.registry import get_task
from experiments import common, pretrain
from marft import sharding, trainer, transcripts
from marft.logprobs import next_token_logprobs
from marft.models.heads import ScoredLM, make_scorer
from marft.models.hf import CheckpointError, load_pretrained, load_scored_lm, save_pretrained
from marft.policies import policy_params, stack_policies
from marft.rollout.engine import CONTINUATIONS, RolloutConfig, collect, model_sampler
from marft.sampling import shape_bucket
from marft.tokenizers import CharTokenizer, Tokenizer, load_tokenizer
from marft.train_step import init_train_state, make_optimizer, make_train_step

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
_MIN_ROWS = 16  # rows per policy are padded to a `shape_bucket`, at least this


def _loss_mask(batch: dict[str, jax.Array]) -> jax.Array:
  """m_{b,t}: the response tokens of kept rows, aligned with the next-token log-probs."""
  return batch["loss_mask"][:, 1:] * batch["row_weight"][:, None]


def loss_denominators(batch: dict[str, jax.Array], cfg: Any = None) -> dict[str, jax.Array]:
  """The batch-wide normalisers of `loss` (`grpo.aggregate_denominators` of its mask), so that
  `loss` over any partition of the batch's rows sums to `loss` over the batch."""
  del cfg
  return grpo.aggregate_denominators(_loss_mask(batch))


def loss(model: nnx.Module, batch: dict[str, jax.Array], cfg: Any,
         denominators: dict[str, jax.Array] | None = None
         ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """GRPO / AT-GRPO policy loss (Stronger Together, Sec. 4.2; DeepSeekMath, Eq. 3).

  L = agg_t[ -min(rho_t A, clip(rho_t, 1-eps, 1+eps) A) ] (+ beta KL_k3(pi || pi_ref)),
  rho_t = pi(y_t) / pi_behaviour(y_t), one advantage A per response broadcast to its tokens.
  `agg` divides by `denominators` (`loss_denominators` of the whole batch) when given, else by
  those of `batch`; with them, the loss and every metric are sums over rows.
  """
  tokens = batch["tokens"]
  mask = _loss_mask(batch)
  logp = next_token_logprobs(model, tokens)
  old = batch["behavior_logp"][:, 1:]
  advantages = jnp.broadcast_to(batch["advantages"][:, None], logp.shape)
  per_token, clipped = grpo.clipped_surrogate(logp, old, advantages, clip_eps=cfg.clip_eps,
                                              dual_clip=cfg.get("dual_clip") or None)
  total = grpo.aggregate(per_token, mask, cfg.aggregation, denominators)
  metrics = {"clip_frac": grpo.aggregate(clipped, mask, "token-mean", denominators),
             "approx_kl": grpo.aggregate(old - logp, mask, "token-mean", denominators)}
  if cfg.kl_coef:
    kl = grpo.aggregate(grpo.low_variance_kl(logp, batch["ref_logp"][:, 1:]), mask, "token-mean",
                        denominators)
    total = total + cfg.kl_coef * kl
    metrics["kl"] = kl
  return total, metrics


def base_model_path(config: Any) -> str:
  """The Hugging Face directory the run starts from: `model.path`, or the task's base model of
  shape `model.name` (one of `pretrain.BASE_MODELS`)."""
  if config.model.get("path"):
    return config.model.path
  return pretrain.base_checkpoint(base_recipe(config))


def base_recipe(config: Any) -> Any:
  """The pretraining config of the run's base model: `model.base` names its recipe
  (`experiments/configs/pretrain_<base>.py`; default the task's), `model.name` its shape."""
  return pretrain.config_for(config.model.get("base") or config.task.name, config.model.name)


def base_model(config: Any) -> tuple[nnx.Module, Any, Tokenizer]:
  """The run's starting model, its config and tokenizer.

  `model.path` names a Hugging Face checkpoint directory (a real LLM with its `tokenizer.json`,
  or `model.tokenizer`: another directory, or `"char"`); without it the task's base model of
  shape `model.name` (`tiny` or `small`) is used, pretrained (and cached) on first use.
  `policies.lora_rank > 0` adds fresh LoRA adapters (trained per policy over the frozen base).
  """
  overrides = {"dtype": config.model.dtype, "lora_rank": config.policies.get("lora_rank", 0),
               "remat": config.model.get("remat", "none"),
               "logprob_chunk": config.model.get("logprob_chunk", 0)}
  if config.model.get("path"):
    model, model_config = load_pretrained(config.model.path, **overrides)
    tokenizer = load_tokenizer(config.model.get("tokenizer") or config.model.path,
                               model_config.vocab_size,
                               enable_thinking=config.model.get("enable_thinking", True))
    return model, model_config, tokenizer
  pretrain_config = base_recipe(config)
  hf_dir = pretrain.base_checkpoint(pretrain_config)
  if not os.path.exists(os.path.join(hf_dir, "config.json")):
    directory = pretrain.base_model_dir(pretrain_config)
    print(f"no base model for {config.task.name} yet: pretraining it in {directory}", flush=True)
    mesh = sharding.make_mesh(**pretrain_config.mesh)
    trainer.run(pretrain_config, directory, pretrain.build(pretrain_config, mesh))
  model, model_config = load_pretrained(hf_dir, **overrides)
  return model, model_config, CharTokenizer(model_config.vocab_size)


def evaluation_views(config: Any, roles_of: Callable[[str], tuple[str, ...]]
                     ) -> dict[str, tuple[str, dict[str, int]]]:
  """Metric prefix -> (workflow kind, role -> policy) for every evaluation of a run.

  `""` is the trained workflow and mapping. `eval.other_workflow` (e.g. `"mas"` for a
  single-agent run) also runs every role of that workflow on policy 0; `eval.swap_roles` also
  runs the trained workflow with the role -> policy assignment rotated by one role (with two
  roles: swapped), the ablation of role-specialised policies.
  """
  mapping = dict(config.policies.mapping)
  views = {"": (config.task.workflow, mapping)}
  options = config.get("eval") or {}
  if options.get("other_workflow"):
    other = options["other_workflow"]
    views[f"{other}/"] = (other, {role: 0 for role in roles_of(other)})
  if options.get("swap_roles"):
    roles = roles_of(config.task.workflow)
    policies = [mapping[role] for role in roles]
    views["swapped/"] = (config.task.workflow, dict(zip(roles, policies[1:] + policies[:1])))
  return views


def policy_batches(rows: dict[str, np.ndarray], policy_ids: np.ndarray, num_policies: int,
                   shuffle: np.random.Generator | None = None, multiple: int = 1
                   ) -> dict[str, np.ndarray]:
  """Splits rows by policy into `[P, B, ...]`, padding each policy to a common B (a
  `shape_bucket`, rounded up to a multiple of `multiple`) with zero-weight rows (so shapes, and
  compilations, repeat). With `shuffle`,
  each policy's B rows (padding included) are put in a random order, so that consecutive
  minibatches mix tasks, roles and turns."""
  counts = [int((policy_ids == p).sum()) for p in range(num_policies)]
  width = -(-shape_bucket(max(counts), _MIN_ROWS) // multiple) * multiple
  orders = [shuffle.permutation(width) if shuffle is not None else np.arange(width)
            for _ in range(num_policies)]
  out = {}
  for name, values in rows.items():
    stacked = np.zeros((num_policies, width) + values.shape[1:], values.dtype)
    for p in range(num_policies):
      picked = values[policy_ids == p]
      stacked[p, :len(picked)] = picked
      stacked[p] = stacked[p][orders[p]]
    out[name] = stacked
  return out


def stacked_policies(config: Any, model: nnx.Module, num_policies: int, mesh: Any,
                     minibatches: int, extra: Any = None) -> tuple[Any, Any, Any, Any]:
  """`(optimizer, graphdef, frozen, state)` of `num_policies` policies starting from `model`
  (only their LoRA adapters trained when `policies.lora_rank > 0`); the optimizer's schedule
  counts `minibatches` updates a step; `extra` rides in the train state."""
  optimizer = make_optimizer(config.optimizer.to_dict() | {
      "total_steps": config.total_steps * minibatches,
      "warmup_steps": config.optimizer.get("warmup_steps", 0) * minibatches})
  lora = bool(config.policies.get("lora_rank", 0))
  graphdef, params, frozen = stack_policies(model, num_policies, lora_only=lora)
  state = init_train_state(params, optimizer, config.seed, mesh=mesh, extra=extra)
  return optimizer, graphdef, frozen, state


def policy_models(graphdef: nnx.GraphDef, params: Any, frozen: Any, num_policies: int
                  ) -> list[nnx.Module]:
  """The `num_policies` models of stacked `params` (with the shared `frozen` base weights of
  LoRA runs)."""
  extra = (frozen,) if frozen is not None else ()
  return [nnx.merge(graphdef, policy_params(params, p), *extra) for p in range(num_policies)]


def prompt_style(config: Any, task: Any) -> str:
  """`task.prompt_style` (default `compact`), checked to be one the task renders."""
  style = config.task.get("prompt_style", "compact")
  if style not in task.PROMPT_STYLES:
    raise common.ConfigError(f"task.prompt_style={style!r}: task {config.task.name!r} renders "
                             f"{task.PROMPT_STYLES}")
  return style


@functools.partial(jax.jit, static_argnames=("eps", "normalize_std", "drop_zero_variance"))
def _grouped(rewards: jax.Array, groups: jax.Array, *, eps: float, normalize_std: bool,
             drop_zero_variance: bool) -> tuple[jax.Array, jax.Array]:
  return (grpo.group_advantages(rewards, groups, eps=eps, normalize_std=normalize_std),
          grpo.group_filter_mask(rewards, groups, drop_zero_variance=drop_zero_variance))


def group_credit(rewards: np.ndarray, groups: np.ndarray, algo: Any
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Each row's group advantage and keep-weight (`grpo.group_advantages`,
  `grpo.group_filter_mask`), computed over rows padded to a `shape_bucket` so that a run
  compiles one shape per bucket; each padding row is a group of its own, which changes no real
  group."""
  n = len(rewards)
  width = shape_bucket(n, _MIN_ROWS)
  padded_rewards = np.zeros(width, np.float32)
  padded_rewards[:n] = rewards
  padded_groups = np.arange(width, dtype=np.int32)  # real ids are dense, so < n
  padded_groups[:n] = groups
  advantages, weight = _grouped(padded_rewards, padded_groups, eps=float(algo.eps),
                                normalize_std=bool(algo.normalize_std),
                                drop_zero_variance=bool(algo.drop_zero_variance))
  return (np.asarray(advantages)[:n].astype(np.float32), np.asarray(weight)[:n])


def evaluate(config: Any, views: dict[str, tuple[str, dict[str, int]]], instances: list,
             make_workflow: Callable[[dict, str, int], Any], max_turns: int, tokenizer: Any,
             models: list[nnx.Module]) -> dict[str, float]:
  """Greedy and sampled (temperature 1) success and mean episodic return of `models` on the
  fixed test `instances`, in every evaluation view (`evaluation_views`): `eval/<view><mode>_
  success` and `_return`; `eval/success_rate` is the trained view's greedy success."""
  metrics = {}
  for prefix, (view_kind, view_mapping) in views.items():
    for name, temperature in (("greedy", 0.0), ("sampled", 1.0)):
      eval_config = RolloutConfig(k=1, tree=False, max_new_tokens=config.rollout.max_new_tokens,
                                  temperature=temperature)
      samplers = [model_sampler(m, tokenizer, eval_config) for m in models]
      workflows = [make_workflow(t, view_kind, max_turns) for t in instances]
      rollout = collect(workflows, samplers, tokenizer, jax.random.key(config.seed),
                        mapping=view_mapping, config=eval_config)
      metrics[f"eval/{prefix}{name}_success"] = rollout.metrics["rollout/success_rate"]
      metrics[f"eval/{prefix}{name}_return"] = episodic_return(rollout.batch)
  metrics["eval/success_rate"] = metrics["eval/greedy_success"]
  return metrics


def episodic_return(batch: Any) -> float:
  """The mean over a rollout's episodes of their team return."""
  _, first = np.unique(np.asarray(batch.episode_id), return_index=True)
  return float(np.asarray(batch.episode_return)[first].mean())


def export_policies(config: Any, model_config: Any, models: list[nnx.Module], workdir: str
                    ) -> None:
  """Each trained policy as a Hugging Face checkpoint (LoRA merged) in `workdir/hf_policy<p>`,
  with the starting checkpoint's tokenizer files."""
  tokenizer_dir = config.model.get("tokenizer") or config.model.get("path")
  for p, policy in enumerate(models):
    path = os.path.join(workdir, f"hf_policy{p}")
    save_pretrained(policy, model_config, path)
    for name in _TOKENIZER_FILES:
      if tokenizer_dir and os.path.isfile(os.path.join(tokenizer_dir, name)):
        shutil.copy(os.path.join(tokenizer_dir, name), path)


class Setup(NamedTuple):
  """What every RL job over a text task starts from (`setup`)."""

  task: Any  # the task module (envs.registry)
  task_cfg: dict
  make_workflow: Callable[[dict, str, int], Any]  # (instance, kind, max_turns) -> Workflow
  roles_of: Callable[[str], tuple[str, ...]]  # workflow kind -> its roles
  roles: tuple[str, ...]  # the trained workflow's roles
  model: nnx.Module
  model_config: Any
  tokenizer: Tokenizer


def policy_job(config: Any, model_config: Any, models_of: Callable[[Any], list[nnx.Module]],
               *, state: Any, train_step: Callable, batch_fn: Callable, eval_fn: Callable,
               provenance: dict[str, Any], progress_keys: tuple[str, ...]) -> trainer.Job:
  """A policy-training job: it exports every policy of `models_of(state)` as a Hugging Face
  checkpoint (`export_policies`) and records the base model beside `provenance`."""

  def export(state, workdir):
    export_policies(config, model_config, models_of(state), workdir)

  return trainer.Job(state=state, train_step=train_step, batch_fn=batch_fn, eval_fn=eval_fn,
                     export=export,
                     provenance={"base_model": os.path.abspath(base_model_path(config)),
                                 **provenance},
                     progress_keys=progress_keys)


def setup(config: Any) -> Setup:
  """The task, its workflows and the base model of an RL config, checked (a ConfigError names
  the bad key) before anything is loaded or compiled: the workflow kind and `policies.mapping`
  against the task's roles, `task.prompt_style` against the task and the tokenizer, the
  checkpoint's architecture and chat template."""
  task = get_task(config.task.name)
  task_cfg = {**task.default_config(), **dict(config.task.get("env", {}))}
  style = prompt_style(config, task)
  sample_task = task.generate_task(0, "test", task_cfg)

  def make_workflow(instance: dict, kind: str, max_turns: int):
    return task.make_workflow(instance, kind, task_cfg, max_turns, style)

  def roles_of(kind: str) -> tuple[str, ...]:
    return make_workflow(sample_task, kind, 1).roles

  try:
    roles = roles_of(config.task.workflow)
    task.generate_task(0, "train", task_cfg)  # an evaluation-only task has no training split
  except ValueError as e:
    raise common.ConfigError(f"task {config.task.name!r} with env {task_cfg}: {e}") from e
  if set(config.policies.mapping) != set(roles):
    raise common.ConfigError(f"policies.mapping={dict(config.policies.mapping)} must name exactly "
                             f"the roles {roles} of the {config.task.workflow!r} workflow")
  chat_error = common.ConfigError(
      "task.prompt_style='chat' needs a tokenizer with a chat template (a checkpoint's "
      "tokenizer.json, model.path); the character tokenizer of the tiny and small models reads "
      "'compact' prompts")
  if style == "chat" and (not config.model.get("path") or config.model.get("tokenizer") == "char"):
    raise chat_error
  try:
    model, model_config, tokenizer = base_model(config)
  except ValueError as e:  # an unsupported checkpoint or tokenizer
    raise common.ConfigError(str(e)) from e
  if style == "chat" and not tokenizer.has_chat_template:
    raise chat_error
  return Setup(task, task_cfg, make_workflow, roles_of, roles, model, model_config, tokenizer)


def require_prm(path: str, key: str = "prm.path") -> None:
  """One ConfigError naming the config `key` when `path` holds no saved PRM (cheap: run it
  before anything is loaded)."""
  if not os.path.exists(os.path.join(path, "config.json")):
    raise common.ConfigError(f"{key}={path!r} holds no PRM (no config.json): pass the hf_prm "
                             "directory a PRM phase exported")


def load_prm(path: str, dtype: str, vocab_size: int, key: str = "prm.path") -> ScoredLM:
  """The PRM saved at `path` (`save_scored_lm`, e.g. a PRM phase's `hf_prm`); one ConfigError
  naming the config `key` when it holds none, cannot be read or does not read the policy's
  vocabulary."""
  require_prm(path, key)
  try:
    model, model_config = load_scored_lm(path, dtype=dtype)
  except (CheckpointError, OSError) as e:
    raise common.ConfigError(f"{key}={path!r}: {e}") from e
  if model_config.vocab_size != vocab_size:
    raise common.ConfigError(f"{key}={path!r} has a vocabulary of {model_config.vocab_size} "
                             f"tokens, the policy {vocab_size}: train the PRM from the policy's "
                             "checkpoint")
  return model


def prm_step_values(scorer: Callable[[list[list[int]]], np.ndarray], batch: Any) -> np.ndarray:
  """The PRM's value of every row's step (its prompt and response, up to the last response
  token), `[rows]`, in one scorer call: AgentPRM's process reward (Sec. 2)."""
  ends = batch.loss_mask.shape[1] - np.argmax(batch.loss_mask[:, ::-1], axis=1)
  return np.asarray(scorer([row[:end].tolist() for row, end in zip(batch.tokens, ends)]),
                    np.float32)


def at_grpo_groups(batch: Any) -> np.ndarray:
  """AT-GRPO's group of each row: its (task, role, turn), as dense ids."""
  return grpo.dense_group_ids(batch.task_id, batch.role_id, batch.turn_id)


def at_grpo_credit(batch: Any, algo: Any) -> tuple[np.ndarray, np.ndarray]:
  """AT-GRPO's credit of a rollout's rows: the mixed reward `alpha r_team + r_local`
  normalised within each (task, role, turn) group (`group_credit`)."""
  rewards = np.asarray(grpo.mix_rewards(batch.reward, batch.team_reward, algo.alpha))
  return group_credit(rewards, at_grpo_groups(batch), algo)


def build(config: Any, mesh: jax.sharding.Mesh,
          credit: Callable[[Any, Any], tuple[np.ndarray, np.ndarray]] = at_grpo_credit,
          groups: Callable[[Any], np.ndarray] = at_grpo_groups) -> trainer.Job:
  """The RL job of `config` (see `experiments/configs/at_grpo.py`); `credit(rollout batch,
  config.algo) -> (advantage, keep-weight)` per row and `groups(rollout batch)`, the group
  each row's advantage is normalised in, for the transcripts (MATPO passes its own)."""
  if config.algo.k < 2:
    raise common.ConfigError(f"algo.k={config.algo.k}: a group needs at least 2 samples")
  prm_path, prm_coef = config.algo.get("prm_path", ""), float(config.algo.get("prm_coef", 0.0))
  if bool(prm_path) != bool(prm_coef):
    raise common.ConfigError(f"algo.prm_path={prm_path!r}, algo.prm_coef={prm_coef}: a PRM as "
                             "dense reward needs both (or neither)")
  if prm_path:
    require_prm(prm_path, "algo.prm_path")
  task, task_cfg, make_workflow, roles_of, roles, model, model_config, tokenizer = setup(config)
  mapping = dict(config.policies.mapping)
  num_policies = max(mapping.values()) + 1
  lora = bool(config.policies.get("lora_rank", 0))
  if config.algo.get("continuation", "best") not in CONTINUATIONS:
    raise common.ConfigError(f"algo.continuation={config.algo.continuation!r}: choose from "
                             f"{CONTINUATIONS} ('best' is the AT-GRPO reference)")
  minibatches = config.algo.get("minibatches", 1)
  if minibatches not in (1, 2, 4, 8):
    raise common.ConfigError(f"algo.minibatches={minibatches}: choose 1, 2, 4 or 8 (the padded "
                             "row counts are multiples of 8)")
  micro_batch_rows = common.micro_batch_rows(config)  # rows are padded to a multiple of it
  # The optimizer counts updates: `minibatches` of them per step.
  optimizer = make_optimizer(config.optimizer.to_dict() | {
      "total_steps": config.total_steps * minibatches,
      "warmup_steps": config.optimizer.get("warmup_steps", 0) * minibatches})
  graphdef, params, frozen = stack_policies(model, num_policies, lora_only=lora)
  state = init_train_state(params, optimizer, config.seed, mesh=mesh)
  algo = config.algo
  train_step = make_train_step(functools.partial(loss, cfg=algo), optimizer, graphdef,
                               mesh=mesh, state=state, frozen=frozen, minibatches=minibatches,
                               micro_batch_rows=micro_batch_rows, denominators=loss_denominators)
  reference_logp = nnx.jit(next_token_logprobs) if algo.kl_coef else None
  rollout_config = RolloutConfig(k=algo.k, tree=algo.tree,
                                 continuation=algo.get("continuation", "best"),
                                 max_new_tokens=config.rollout.max_new_tokens,
                                 temperature=config.rollout.temperature)
  kind = config.task.workflow
  keep_transcripts = transcripts.wanted(config)
  prm_scorer = make_scorer(load_prm(prm_path, config.model.dtype, model_config.vocab_size,
                                    "algo.prm_path"), tokenizer.pad_id,
                           link=agentprm.prm_value) if prm_path else None

  def models_of(state):
    return policy_models(graphdef, state.params, frozen, num_policies)

  def batch_fn(state):
    step = int(state.step)
    rounds = config.curriculum.max_turns or (task_cfg["max_turns"],)
    max_turns = grpo.max_turns_at(step + 1, rounds, config.curriculum.every)
    seeds = np.random.default_rng([config.seed, step]).integers(0, 2**31, config.task.num_tasks)
    workflows = [make_workflow(task.generate_task(int(s), "train", task_cfg), kind, max_turns)
                 for s in seeds]
    samplers = [model_sampler(m, tokenizer, rollout_config) for m in models_of(state)]
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), step)
    rollout = collect(workflows, samplers, tokenizer, key, mapping=mapping, config=rollout_config)
    b = jax.tree.map(np.asarray, rollout.batch)
    prm_metrics = {}
    if prm_scorer is not None:  # AgentPRM's PRM as a dense reward: r_local += c Q_PRM(s, a)
      values = prm_step_values(prm_scorer, b)
      b = b.replace(reward=b.reward + prm_coef * values)
      prm_metrics = {"train/prm_value": float(values.mean())}
    advantages, weight = credit(b, algo)
    rows = {"tokens": b.tokens, "loss_mask": b.loss_mask, "behavior_logp": b.behavior_logp,
            "advantages": advantages, "row_weight": weight}
    if reference_logp is not None:  # the frozen starting model, for the KL penalty
      tokens = np.zeros((shape_bucket(len(b.tokens), _MIN_ROWS),) + b.tokens.shape[1:], np.int32)
      tokens[:len(b.tokens)] = b.tokens  # rows padded to a bucket: one compilation per bucket
      ref = np.zeros_like(b.behavior_logp)
      ref[:, 1:] = np.asarray(reference_logp(model, jnp.asarray(tokens)))[:len(b.tokens)]
      rows["ref_logp"] = ref
    shuffle = np.random.default_rng([config.seed, step, 1]) if minibatches > 1 else None
    batch = policy_batches(rows, b.policy_id, num_policies, shuffle,
                            multiple=minibatches * max(micro_batch_rows, 1))
    metrics = {k: v for k, v in rollout.metrics.items()
               if k.startswith(("rollout/", "train/reward"))}
    metrics |= prm_metrics
    metrics["rollout/max_turns"] = max_turns
    metrics["rollout/kept_rows"] = float(weight.sum())
    metrics["train/advantage_abs"] = float(np.abs(advantages * weight).sum()
                                           / max(weight.sum(), 1.0))
    if keep_transcripts:
      metrics["transcripts"] = transcripts.records(
          b, tokenizer, roles, advantages=advantages, weights=weight, groups=groups(b),
          episodes=rollout.transcripts, tree=rollout_config.tree)
    return batch, metrics

  test_instances = load_instances(config.task.name, task_cfg, config.task.eval_tasks)
  views = evaluation_views(config, roles_of)

  def eval_fn(state):
    return evaluate(config, views, test_instances, make_workflow, task_cfg["max_turns"],
                    tokenizer, models_of(state))

  return policy_job(config, model_config, models_of, state=state, train_step=train_step,
                    batch_fn=batch_fn, eval_fn=eval_fn,
                    provenance={"task_settings": task_cfg,
                                **({"prm": os.path.abspath(prm_path)} if prm_path else {})},
                    progress_keys=("eval/greedy_success", "eval/sampled_success",
                                   "rollout/success_rate"))
