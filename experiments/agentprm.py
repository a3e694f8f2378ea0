"""The AgentPRM and InversePRM jobs (Choudhury 2025, "Process Reward Models for LLM Agents:
Practical Framework and Directions"): one job per phase of AgentPRM's loop, each a resumable
run with its own workdir; iterations chain by passing one phase's export to the next.

PRM phase (`algo.name = "agentprm"`), `prm.method`:
- `agentprm` (Sec. 2): the policy (`model.path`, e.g. a previous policy phase's `hf_policy0`,
  else the task's base model) plays `prm.rollouts` episodes of each of `prm.questions` training
  tasks at temperature `prm.temperature`. A step is the acting role's prompt followed by its
  response, keyed by their text; its target is the Monte-Carlo estimate of Q(s, a) from the
  episodes' outcomes (`agentprm.mc_step_targets`, discount `prm.gamma`), one example per unique
  step. The PRM (`ScoredLM`: the policy's trunk and a `ValueHead`) trains with
  `agentprm.prm_loss`, its logit read at the step's last token. `prm.shaping=True`: the
  targets are process-reward shaped (Sec. 4) by the episodes' own state values.
- `inverse` (InversePRM, Sec. 3): the task's solver plays each training task to the end (the
  expert); each expert transition (s, a, s', a') has a' re-sampled from the policy at s' (label
  1), each policy transition the policy's own next action (label 0). The implied reward
  r = Q(s, a) - gamma Q(s', a') (Q(s', a') = 0 at an episode's last step) is the logit of a
  class-balanced expert-vs-policy classifier (`agentprm.inverse_prm_loss`), half of every batch
  from each class.
Evaluation: the policy's episodes on test tasks; the PRM's value of each episode's final step
separates successes from failures (`eval/auc`). Export: `<workdir>/hf_prm`.

Policy phase (`algo.name = "agentprm_policy"`, Sec. 2, policy improvement): online DPO against
the PRM of `prm.path`. Each step the current policy plays `task.num_tasks` training tasks; at
`algo.states_per_step` of the states it visited it samples two responses of the acting role
(temperature `algo.temperature`); the PRM's higher-scored one is chosen (ties dropped,
`agentprm.prm_pairs`) and `agentprm.dpo_loss` (beta `algo.beta`) updates the policy against the
frozen starting policy. Evaluation: greedy and sampled success on the test tasks, and with
`algo.best_of_n = N > 0` per-step Best-of-N with the PRM (`search.beam_search` with width N and
one beam), the N candidates sampled at temperature `algo.best_of_n_temperature`. Export:
`<workdir>/hf_policy0`, which the next PRM phase reads as `model.path`.

The PRM as a dense reward (Sec. 2's second policy-improvement option) is an option of the
AT-GRPO / GRPO job instead: `--config.algo.prm_path=<PRM phase workdir>/hf_prm
--config.algo.prm_coef=c` adds c Q_PRM(s, a) to each action's local reward
(`experiments/rl.py`).
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from algorithms.prm import agentprm, search
from envs.data.task_instances import load_instances
from experiments import common, prm, rl, verifier
from marft import trainer
from marft.logprobs import next_token_logprobs
from marft.models.heads import ScoredLM, make_scorer
from marft.rollout.engine import Rollout, RolloutConfig, Sampler, collect, model_sampler
from marft.rollout.workflow import Workflow
from marft.sampling import shape_bucket
from marft.train_step import make_train_step

PRM_JOB, POLICY_JOB = "agentprm", "agentprm_policy"
METHODS = ("agentprm", "inverse")


class Episode(NamedTuple):
  """One played episode: each step's prompt and response tokens, in order, and its success."""

  prompts: list[list[int]]
  responses: list[list[int]]
  success: bool


class Transitions(NamedTuple):
  """InversePRM's transitions (s, a, s', a'): `steps` holds token lists (prompt + response);
  `current[i]` and `following[i]` index transition i's (s, a) and (s', a') in it
  (`following[i] = current[i]` at a terminal, where Q(s', a') is not read); `terminal` 1 at an
  episode's last step; `expert` True for an expert transition (label 1)."""

  steps: list[list[int]]
  current: np.ndarray
  following: np.ndarray
  terminal: np.ndarray
  expert: np.ndarray


def read_logits(z: jax.Array, mask: jax.Array) -> jax.Array:
  """The PRM logit of each row at its step's last token: sum_t z_{b,t} m_{b,t}, `[B]`."""
  return jnp.sum(z * mask, axis=1)


def rollout_episodes(rollout: Rollout) -> list[Episode]:
  """The episodes of a `collect` rollout of independent copies (`tree=False`), each step's
  prompt and response in the order they were taken."""
  b = jax.tree.map(np.asarray, rollout.batch)
  episodes = [Episode([], [], bool(t["success"])) for t in rollout.transcripts]
  starts = b.loss_mask.argmax(1)
  ends = starts + b.loss_mask.sum(1).astype(np.int64)
  for row in range(b.num_rows):
    episode = episodes[int(b.episode_id[row])]
    episode.prompts.append(b.tokens[row, :starts[row]].tolist())
    episode.responses.append(b.tokens[row, starts[row]:ends[row]].tolist())
  return episodes


def policy_episodes(workflows: Sequence[Workflow], sampler: Sampler, tokenizer: Any,
                    key: jax.Array, n: int) -> list[Episode]:
  """`n` independent episodes of each workflow, every role played by `sampler`."""
  config = RolloutConfig(k=n, tree=False)
  rollout = collect(workflows, [sampler], tokenizer, key,
                    mapping={role: 0 for role in workflows[0].roles}, config=config)
  return rollout_episodes(rollout)


def expert_episodes(workflows: Sequence[Workflow], tokenizer: Any) -> list[Episode]:
  """Each workflow played to the end by its solver (`Workflow.expert_response`), the responses
  tokenized as demonstrations are (`marft.rollout.demonstrations`: text + end of sequence)."""
  episodes = []
  for workflow in workflows:
    workflow, prompts, responses = workflow.clone(), [], []
    while not workflow.done:
      answers = {}
      for role in workflow.acting_roles():
        answers[role] = workflow.expert_response(role)
        prompts.append(tokenizer.chat(workflow.prompt(role)))
        responses.append(tokenizer.encode(answers[role]) + [tokenizer.eos_id])
      workflow.act(answers)
    episodes.append(Episode(prompts, responses, bool(workflow.success)))
  return episodes


def step_examples(episodes: Sequence[Episode], tokenizer: Any, *, gamma: float,
                  shaping: bool = False) -> tuple[list[list[int]], np.ndarray]:
  """AgentPRM's PRM data (Sec. 2): one example per unique step, keyed by (prompt text, response
  text), its tokens those of its first visit and its target `agentprm.mc_step_targets` of all
  the episodes, (mean over visits of gamma^k (2 success - 1) + 1) / 2 with k the steps after it.

  `shaping` (process reward shaping, Sec. 4): the target is `agentprm.shaped_targets`,
  Q(s, a) + gamma V_ref(s') - V_ref(s) with V_ref the same episodes' Monte-Carlo state values
  (the policy that played them is the reference; keyed by the prompt text, s' the next step's
  state in each visit's episode, V_ref = 0 after the last step, averaged over visits), mapped
  by (Q + 1) / 2 and clipped to [0, 1]."""
  keyed = [[(tokenizer.decode(p), tokenizer.decode(r)) for p, r in zip(e.prompts, e.responses)]
           for e in episodes]
  targets = agentprm.mc_step_targets([(keys, e.success) for keys, e in zip(keyed, episodes)],
                                     gamma=gamma)
  tokens: dict[tuple[str, str], list[int]] = {}
  for keys, e in zip(keyed, episodes):
    for key, prompt, response in zip(keys, e.prompts, e.responses):
      tokens.setdefault(key, list(prompt) + list(response))
  q = np.asarray([2.0 * targets[key] - 1.0 for key in tokens], np.float32)
  if shaping:
    v_ref = {state: 2.0 * t - 1.0 for state, t in agentprm.mc_step_targets(
        [([state for state, _ in keys], e.success) for keys, e in zip(keyed, episodes)],
        gamma=gamma).items()}
    following: dict[tuple[str, str], list[float]] = {}
    for keys in keyed:
      for i, key in enumerate(keys):
        following.setdefault(key, []).append(v_ref[keys[i + 1][0]] if i + 1 < len(keys)
                                             else 0.0)
    q = np.asarray(agentprm.shaped_targets(
        jnp.asarray(q), jnp.asarray([v_ref[state] for state, _ in tokens], jnp.float32),
        jnp.asarray([np.mean(following[key]) for key in tokens], jnp.float32), gamma=gamma))
  return list(tokens.values()), np.clip((q + 1.0) / 2.0, 0.0, 1.0).astype(np.float32)


def inverse_transitions(expert: Sequence[Episode], policy: Sequence[Episode],
                        resample: Callable[[list[list[int]]], list[list[int]]]) -> Transitions:
  """InversePRM's transitions (Sec. 3) of consecutive steps of each episode. An expert step's
  next action a' is re-sampled from the policy at the expert's next state s' (`resample`: next
  prompts -> one response each, called once for all); a policy step's is the policy's own."""
  steps: list[list[int]] = []
  current, following, terminal, labels = [], [], [], []
  pending = []  # (transition, next prompt) of expert steps whose a' is re-sampled
  for is_expert, episodes in ((True, expert), (False, policy)):
    for e in episodes:
      first = len(steps)
      steps += [list(p) + list(r) for p, r in zip(e.prompts, e.responses)]
      for i in range(len(e.prompts)):
        last = i == len(e.prompts) - 1
        current.append(first + i)
        following.append(first + i if last else first + i + 1)
        terminal.append(float(last))
        labels.append(is_expert)
        if is_expert and not last:
          pending.append((len(current) - 1, list(e.prompts[i + 1])))
  if pending:
    for (t, prompt), response in zip(pending, resample([p for _, p in pending])):
      following[t] = len(steps)
      steps.append(prompt + list(response))
  return Transitions(steps, np.asarray(current, np.int64), np.asarray(following, np.int64),
                     np.asarray(terminal, np.float32), np.asarray(labels, bool))


def prm_batch_loss(model: ScoredLM, batch: dict[str, jax.Array], cfg: Any = None,
                   denominators: dict[str, jax.Array] | None = None
                   ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """AgentPRM's PRM loss (Sec. 2) of a batch (`tokens`, `mask` on each step's last token,
  `targets`): `agentprm.prm_loss`, soft BCE of the read logit against the Monte-Carlo target."""
  del cfg, denominators
  z = model(batch["tokens"])
  loss = agentprm.prm_loss(z, batch["targets"][:, None] * batch["mask"], batch["mask"])
  predicted = jax.nn.sigmoid(read_logits(z, batch["mask"]))
  return loss, {"target_error": jnp.mean(jnp.abs(predicted - batch["targets"]))}


def inverse_batch_loss(model: ScoredLM, batch: dict[str, jax.Array], cfg: Any = None,
                       denominators: dict[str, jax.Array] | None = None, *, gamma: float
                       ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """InversePRM's loss (Sec. 3) of a batch whose first half are expert transitions and second
  half policy transitions: r = Q(s, a) - gamma (1 - done) Q(s', a') (`inverse_prm_reward`, the
  gradient through both Q), then `inverse_prm_loss`(r_expert, r_policy). Keys: `tokens`, `mask`
  (s, a), `next_tokens`, `next_mask` (s', a'), `terminal`."""
  del cfg, denominators
  q = read_logits(model(batch["tokens"]), batch["mask"])
  q_next = read_logits(model(batch["next_tokens"]), batch["next_mask"])
  reward = agentprm.inverse_prm_reward(q, q_next, batch["terminal"], gamma=gamma)
  half = reward.shape[0] // 2
  expert, policy = reward[:half], reward[half:]
  return agentprm.inverse_prm_loss(expert, policy), {
      "reward_expert": expert.mean(), "reward_policy": policy.mean(),
      "accuracy": 0.5 * ((expert > 0).mean() + (policy <= 0).mean())}


def sequence_logprobs(model: nnx.Module, tokens: jax.Array, response_mask: jax.Array
                      ) -> jax.Array:
  """log pi(y | x) = sum_t m_t log pi(tokens_t | tokens_<t) over each row's response tokens
  (`response_mask` m), `[B]`."""
  return jnp.sum(next_token_logprobs(model, tokens) * response_mask[:, 1:], axis=1)


def dpo_rows(prompts: Sequence[Sequence[int]],
             responses: Sequence[tuple[Sequence[int], Sequence[int]]], scores: np.ndarray,
             pad_id: int) -> dict[str, np.ndarray]:
  """AgentPRM's online-DPO pairs (Sec. 2) of S states, two sampled responses each and their PRM
  scores `[S, 2]`: `tokens` and `response_mask` `[2S, T]`, the S chosen (higher-scored) rows
  then the S rejected ones, and `weight` `[S]`, 0 where the scores tie (`agentprm.prm_pairs`)."""
  chosen, valid = (np.asarray(x) for x in agentprm.prm_pairs(jnp.asarray(scores, jnp.float32)))
  pairs = [(list(p), list(r[c]), list(r[1 - c])) for p, r, c in zip(prompts, responses, chosen)]
  rows = [(p, w) for p, w, _ in pairs] + [(p, l) for p, _, l in pairs]
  width = shape_bucket(max(len(p) + len(r) for p, r in rows))
  tokens = np.full((len(rows), width), pad_id, np.int32)
  mask = np.zeros((len(rows), width), np.float32)
  for i, (prompt, response) in enumerate(rows):
    tokens[i, :len(prompt) + len(response)] = prompt + response
    mask[i, len(prompt):len(prompt) + len(response)] = 1.0
  return {"tokens": tokens, "response_mask": mask, "weight": valid.astype(np.float32)}


def dpo_batch_loss(model: nnx.Module, batch: dict[str, jax.Array], cfg: Any = None,
                   denominators: dict[str, jax.Array] | None = None, *, beta: float
                   ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Online DPO (AgentPRM, Sec. 2) of a `dpo_rows` batch with the reference's sequence
  log-probabilities `ref_logp` `[2S]`: the weighted mean over pairs of `agentprm.dpo_loss`,
  -log sigmoid(beta [(log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))]),
  tied pairs (weight 0) left out; the metrics likewise."""
  del cfg, denominators
  logp = sequence_logprobs(model, batch["tokens"], batch["response_mask"])
  ref, weight = batch["ref_logp"], batch["weight"]
  s = weight.shape[0]
  per_pair = jax.vmap(lambda pc, pr, rc, rr: agentprm.dpo_loss(
      pc[None], pr[None], rc[None], rr[None], beta=beta))
  losses, metrics = per_pair(logp[:s], logp[s:], ref[:s], ref[s:])
  count = jnp.maximum(weight.sum(), 1.0)
  mean = lambda x: jnp.sum(x * weight) / count
  return mean(losses), {**{k: mean(v) for k, v in metrics.items()}, "pairs": weight.sum()}


def check_config(config: Any) -> None:
  """The AgentPRM keys of either phase, one ConfigError each, before anything is loaded."""
  name = config.algo.name
  if name not in (PRM_JOB, POLICY_JOB):
    raise common.ConfigError(f"algo.name={name!r}: the AgentPRM jobs are {PRM_JOB!r} and "
                             f"{POLICY_JOB!r}")
  mapping = dict(config.policies.mapping)
  if set(mapping.values()) != {0}:
    raise common.ConfigError(f"policies.mapping={mapping}: AgentPRM trains one policy shared by "
                             "every role (map each role to 0)")
  pcfg = config.prm
  if name == POLICY_JOB:
    if not pcfg.get("path"):
      raise common.ConfigError("prm.path is empty: the policy phase needs a trained PRM; run the "
                               "PRM phase (experiments/configs/agentprm.py:agentprm,<scale>) and "
                               "pass --config.prm.path=<its workdir>/hf_prm")
    algo = config.algo
    if not algo.beta > 0:
      raise common.ConfigError(f"algo.beta={algo.beta} must be > 0")
    if algo.states_per_step < 1 or config.task.num_tasks < 1:
      raise common.ConfigError(f"algo.states_per_step={algo.states_per_step} and "
                               f"task.num_tasks={config.task.num_tasks} must be >= 1")
    if algo.best_of_n < 0:
      raise common.ConfigError(f"algo.best_of_n={algo.best_of_n}: N >= 1, or 0 for no "
                               "Best-of-N evaluation")
    for key in ("temperature", "best_of_n_temperature"):
      if algo[key] < 0:
        raise common.ConfigError(f"algo.{key}={algo[key]} must be >= 0 (0: greedy)")
    rl.require_prm(pcfg.path)
    return
  if pcfg.method not in METHODS:
    raise common.ConfigError(f"prm.method={pcfg.method!r}: choose from {METHODS}")
  for key in ("questions", "rollouts", "batch_size", "eval_questions", "eval_samples"):
    if pcfg[key] < 1:
      raise common.ConfigError(f"prm.{key}={pcfg[key]} must be >= 1")
  if pcfg.method == "inverse" and pcfg.batch_size % 2:
    raise common.ConfigError(f"prm.batch_size={pcfg.batch_size}: InversePRM's batches are half "
                             "expert, half policy transitions, so it must be even")
  if not 0.0 <= pcfg.gamma <= 1.0:
    raise common.ConfigError(f"prm.gamma={pcfg.gamma}: a discount in [0, 1]")


def build(config: Any, mesh: jax.sharding.Mesh) -> trainer.Job:
  """The job of `config.algo.name`: the PRM phase (`agentprm`) or the policy phase
  (`agentprm_policy`) of `experiments/configs/agentprm.py`."""
  check_config(config)
  return (build_prm if config.algo.name == PRM_JOB else build_policy)(config, mesh)


def build_prm(config: Any, mesh: jax.sharding.Mesh) -> trainer.Job:
  """The PRM phase: AgentPRM's Monte-Carlo targets or InversePRM's expert-vs-policy transitions
  from the policy's episodes on `prm.questions` training tasks, then the PRM's training."""
  pcfg = config.prm
  setup = rl.setup(config)
  if not callable(getattr(setup.model, "hidden_states", None)):
    raise common.ConfigError(f"{type(setup.model).__name__} exposes no hidden states")
  tok = setup.tokenizer
  workflows = [setup.make_workflow(setup.task.generate_task(config.seed * 10**6 + i, "train",
                                                            setup.task_cfg),
                                   config.task.workflow, setup.task_cfg["max_turns"])
               for i in range(pcfg.questions)]
  sampler = model_sampler(setup.model, tok, RolloutConfig(
      max_new_tokens=config.rollout.max_new_tokens, temperature=pcfg.temperature,
      top_p=pcfg.top_p))
  key = jax.random.key(config.seed)
  policy = policy_episodes(workflows, sampler, tok, key, pcfg.rollouts)
  stats = {"data/episodes": float(len(policy)),
           "data/success_rate": float(np.mean([e.success for e in policy]))}
  if pcfg.method == "agentprm":
    steps, targets = step_examples(policy, tok, gamma=pcfg.gamma,
                                   shaping=pcfg.get("shaping", False))
    tokens, mask = prm.step_rows(steps, tok.pad_id)
    stats |= {"data/examples": float(len(steps)), "data/target_mean": float(targets.mean())}
    loss_fn = prm_batch_loss

    def pick(rng):
      rows = rng.integers(0, len(targets), pcfg.batch_size)
      return {"tokens": tokens[rows], "mask": mask[rows], "targets": targets[rows]}
  else:
    expert = expert_episodes(workflows, tok)
    resample_key = jax.random.fold_in(key, 1)
    data = inverse_transitions(
        expert, policy, lambda prompts: [s.tokens.tolist() for s in sampler(prompts,
                                                                            resample_key)])
    tokens, mask = prm.step_rows(data.steps, tok.pad_id)
    by_label = [np.flatnonzero(data.expert), np.flatnonzero(~data.expert)]
    stats |= {"data/expert_transitions": float(len(by_label[0])),
              "data/policy_transitions": float(len(by_label[1])),
              "data/expert_success_rate": float(np.mean([e.success for e in expert]))}
    loss_fn = functools.partial(inverse_batch_loss, gamma=pcfg.gamma)

    def pick(rng):
      rows = np.concatenate([ids[rng.integers(0, len(ids), pcfg.batch_size // 2)]
                             for ids in by_label])
      live = 1.0 - data.terminal[rows]
      return {"tokens": tokens[data.current[rows]], "mask": mask[data.current[rows]],
              "next_tokens": tokens[data.following[rows]],
              "next_mask": mask[data.following[rows]] * live[:, None],
              "terminal": data.terminal[rows]}

  eval_steps, eval_labels = prm.final_steps(config, setup)
  return verifier.scored_lm_job(
      config, mesh, setup, hidden_dims=pcfg.hidden_dims, loss=loss_fn,
      batch=lambda step: pick(np.random.default_rng([config.seed, step])), stats=stats,
      evaluate=lambda model: prm.separation(
          make_scorer(model, tok.pad_id, link=agentprm.prm_value), eval_steps, eval_labels),
      export=prm.EXPORT)


def build_policy(config: Any, mesh: jax.sharding.Mesh) -> trainer.Job:
  """The policy phase: online DPO on pairs the PRM ranks, against the frozen starting policy."""
  algo, path = config.algo, config.prm.path
  setup = rl.setup(config)
  tok, mapping = setup.tokenizer, dict(config.policies.mapping)
  prm_scorer = make_scorer(rl.load_prm(path, config.model.dtype,
                                             setup.model_config.vocab_size),
                                    tok.pad_id, link=agentprm.prm_value)
  optimizer, graphdef, frozen, state = rl.stacked_policies(config, setup.model, 1, mesh, 1)
  train_step = make_train_step(functools.partial(dpo_batch_loss, beta=algo.beta), optimizer,
                               graphdef, mesh=mesh, state=state, frozen=frozen)
  reference_logp = nnx.jit(sequence_logprobs)  # the starting policy, `setup.model`, frozen
  max_new_tokens, max_turns = config.rollout.max_new_tokens, setup.task_cfg["max_turns"]
  states_config = RolloutConfig(k=1, tree=False, max_new_tokens=max_new_tokens,
                                temperature=config.rollout.temperature)
  pair_config = RolloutConfig(max_new_tokens=max_new_tokens, temperature=algo.temperature)
  best_of_n_config = RolloutConfig(max_new_tokens=max_new_tokens,
                                   temperature=algo.best_of_n_temperature)

  def models_of(state):
    return rl.policy_models(graphdef, state.params, frozen, 1)

  def batch_fn(state):
    step = int(state.step)
    seeds = np.random.default_rng([config.seed, step]).integers(0, 2**31, config.task.num_tasks)
    workflows = [setup.make_workflow(setup.task.generate_task(int(s), "train", setup.task_cfg),
                                     config.task.workflow, max_turns) for s in seeds]
    (policy,) = models_of(state)
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), step)
    rollout = collect(workflows, [model_sampler(policy, tok, states_config)], tok,
                      jax.random.fold_in(key, 0), mapping=mapping, config=states_config)
    visited = [p for e in rollout_episodes(rollout) for p in e.prompts]
    picked = np.random.default_rng([config.seed, step, 1]).choice(
        len(visited), algo.states_per_step, replace=len(visited) < algo.states_per_step)
    prompts = [visited[i] for i in picked]
    samples = model_sampler(policy, tok, pair_config)([p for p in prompts for _ in range(2)],
                                                      jax.random.fold_in(key, 1))
    responses = [(samples[2 * i].tokens.tolist(), samples[2 * i + 1].tokens.tolist())
                 for i in range(len(prompts))]
    scores = np.asarray(prm_scorer([p + r for p, pair in zip(prompts, responses)
                                    for r in pair])).reshape(-1, 2)
    rows = dpo_rows(prompts, responses, scores, tok.pad_id)
    rows["ref_logp"] = np.asarray(reference_logp(setup.model, jnp.asarray(rows["tokens"]),
                                                 jnp.asarray(rows["response_mask"])))
    metrics = {k: v for k, v in rollout.metrics.items() if k.startswith("rollout/")}
    metrics |= {"train/valid_pairs": float(rows["weight"].mean()),
                "train/prm_value_chosen": float(scores.max(axis=1).mean()),
                "train/prm_value_rejected": float(scores.min(axis=1).mean())}
    return {k: v[None] for k, v in rows.items()}, metrics

  test_instances = load_instances(config.task.name, setup.task_cfg, config.task.eval_tasks)
  views = rl.evaluation_views(config, setup.roles_of)

  def eval_fn(state):
    models = models_of(state)
    metrics = rl.evaluate(config, views, test_instances, setup.make_workflow, max_turns, tok,
                          models)
    if algo.best_of_n:
      workflows = [setup.make_workflow(t, config.task.workflow, max_turns)
                   for t in test_instances]
      outcomes, spend = search.beam_search(
          workflows, model_sampler(models[0], tok, best_of_n_config), tok,
          jax.random.key(config.seed), scorer=prm_scorer, width=algo.best_of_n, beams=1)
      metrics["eval/best_of_n_success"] = float(np.mean([o.success for o in outcomes]))
      metrics["eval/best_of_n_samples"] = spend.metrics(len(outcomes))["samples_per_question"]
    return metrics

  return rl.policy_job(config, setup.model_config, models_of, state=state,
                       train_step=train_step, batch_fn=batch_fn, eval_fn=eval_fn,
                       provenance={"prm": os.path.abspath(path),
                                   "task_settings": setup.task_cfg},
                       progress_keys=("eval/greedy_success", "eval/best_of_n_success",
                                      "train/reward_accuracy"))
