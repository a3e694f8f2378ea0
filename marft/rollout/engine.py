"""The multi-agent rollout engine: workflows in, a TurnBatch and transcripts out.

Each task runs as K copies. Every iteration, all acting (episode, role) prompts are batched
into ONE sampling call per policy (`config.policies.mapping`: role -> policy index), each copy
applies its responses, and one row per action is recorded. With tree sampling (AT-GRPO), the K
copies of a task act from the same state, so their K candidates form the group of
(task, role, turn); then every copy continues from one candidate's state: the best (highest
summed reward of the acting roles, ties to the lowest index; the AT-GRPO reference), or with
`continuation="sampled"` the first copy's, a draw from the policy itself, so training visits
the states the policy's own mistakes lead to (e.g. a plan agent shown a blocked proposal).
Without tree sampling the K copies are independent episodes (GRPO's K samples per prompt when
the workflow has one turn). A workflow with nested episodes (MATPO's planner delegating to a worker)
acts them as its own stages, so every waiting prompt, nested or not, joins the iteration's one
sampling call per policy; a nested row records the row that started its episode (`parent_id`).
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from marft.rollout.batch import TurnBatch
from marft.rollout.workflow import Workflow
from marft.sampling import generate, prompt_bucket, shape_bucket


CONTINUATIONS = ("best", "sampled")  # which candidate a tree continues from


class Sample(NamedTuple):
  """One sampled response: its token ids (the stop token included) and their log-probs."""

  tokens: np.ndarray
  logprobs: np.ndarray


# A policy's sampler: prompt token lists and a key -> one Sample per prompt.
Sampler = Callable[[Sequence[Sequence[int]], jax.Array], list[Sample]]
# A scorer (a verifier): token lists (scoring prompt + response) -> one float score each.
Scorer = Callable[[Sequence[Sequence[int]]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
  """`k` copies per task; `tree` sampling or independent copies, and which candidate a tree
  continues from (`"best"` or `"sampled"`); sampling settings; threads for environment steps;
  the most prompts one `generate` call takes (a larger stage is generated in chunks)."""

  k: int = 4
  tree: bool = True
  continuation: str = "best"
  max_new_tokens: int = 8
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  env_workers: int = 8  # threads stepping environments (they overlap sandbox subprocesses)
  max_batch: int = 4096  # prompts per generate call: bounds its KV cache and logits


def model_sampler(model: Any, tokenizer: Any, config: RolloutConfig) -> Sampler:
  """A Sampler over `marft.sampling.generate` for one policy's model."""

  def sample(prompts: Sequence[Sequence[int]], key: jax.Array) -> list[Sample]:
    if len(prompts) > config.max_batch:  # chunk c samples with fold_in(key, c)
      step = config.max_batch
      return [s for c, start in enumerate(range(0, len(prompts), step))
              for s in sample(prompts[start:start + step], jax.random.fold_in(key, c))]
    lengths = np.asarray([len(p) for p in prompts], np.int32)
    padded = np.full((len(prompts), prompt_bucket(lengths.max())), tokenizer.pad_id, np.int32)
    for row, prompt in enumerate(prompts):
      padded[row, :len(prompt)] = prompt
    out = generate(model, padded, lengths, key, max_new_tokens=config.max_new_tokens,
                   temperature=config.temperature, top_k=config.top_k, top_p=config.top_p,
                   stop_ids=tokenizer.stop_ids, pad_id=tokenizer.pad_id)
    tokens, logprobs, counts = (np.asarray(x) for x in jax.device_get(out))
    return [Sample(t[:n], lp[:n]) for t, lp, n in zip(tokens, logprobs, counts)]

  return sample


@dataclasses.dataclass
class _Row:
  prompt: list[int]
  sample: Sample
  policy: int
  role: int
  turn: int
  episode: int
  task: int
  branch: int
  stage: int  # the engine iteration (one stage of every live episode) that produced the row
  parent: int = -1  # the row whose action started this row's nested episode
  reward: float = 0.0
  team_reward: float = 0.0
  invalid: bool = False
  score: float = 0.0


class Rollout(NamedTuple):
  batch: TurnBatch
  transcripts: list[dict[str, Any]]
  metrics: dict[str, float]


def collect(workflows: Sequence[Workflow], samplers: Sequence[Sampler], tokenizer: Any,
            key: jax.Array, *, mapping: Mapping[str, int], config: RolloutConfig,
            scorer: Scorer | None = None) -> Rollout:
  """Runs every workflow (one per task) to the end as `config.k` copies; see module doc.

  With a `scorer`, every response a workflow wants scored (`Workflow.scoring_prompt`) is
  scored in one call per iteration, on its scoring prompt followed by the response, and the
  workflow sees the scores (`observe_scores`) before it acts; rows keep them (`score`), or the
  score a workflow's outcome reports (`RoleOutcome.score`: one it showed without a scorer).
  """
  roles = workflows[0].roles
  for role in roles:
    if role not in mapping:
      raise ValueError(f"policies.mapping has no policy for role {role!r} (mapping {dict(mapping)})")
  if max(mapping[r] for r in roles) >= len(samplers):
    raise ValueError(f"mapping {dict(mapping)} needs more than {len(samplers)} policies")
  if config.continuation not in CONTINUATIONS:
    raise ValueError(f"continuation={config.continuation!r}: choose from {CONTINUATIONS}")
  k = config.k
  episodes: list[list[Workflow]] = [[wf.clone() for _ in range(k)] for wf in workflows]
  transcripts = [[[] for _ in range(k)] for _ in workflows]
  rows: list[_Row] = []
  chosen_rows: list[list[int]] = [[] for _ in workflows]  # tree: rows on the chosen path
  last_row: list[list[dict[str, int]]] = [[{} for _ in range(k)] for _ in workflows]
  invalid = collections.Counter()
  actions = collections.Counter()
  generate_seconds = env_seconds = 0.0
  generate_calls = iteration = 0
  started = time.perf_counter()
  executor = concurrent.futures.ThreadPoolExecutor(max_workers=config.env_workers)

  while True:
    live = [(t, b) for t in range(len(workflows)) for b in range(k)
            if not episodes[t][b].done]
    if not live:
      break
    # One request per (live episode, acting role); one sampling call per policy.
    requests = []
    for t, b in live:
      for role in episodes[t][b].acting_roles():
        prompt = tokenizer.chat(episodes[t][b].prompt(role))
        requests.append((t, b, role, prompt))
    by_policy = collections.defaultdict(list)
    for index, (_, _, role, _) in enumerate(requests):
      by_policy[mapping[role]].append(index)
    samples: list[Sample | None] = [None] * len(requests)
    tick = time.perf_counter()
    generate_calls += len(by_policy)
    for policy, indices in sorted(by_policy.items()):
      policy_key = jax.random.fold_in(jax.random.fold_in(key, iteration), policy)
      for index, sample in zip(indices, samplers[policy]([requests[i][3] for i in indices],
                                                          policy_key)):
        samples[index] = sample
    generate_seconds += time.perf_counter() - tick

    tick = time.perf_counter()
    responses = collections.defaultdict(dict)
    request_rows = collections.defaultdict(list)
    for (t, b, role, prompt), sample in zip(requests, samples):
      responses[(t, b)][role] = tokenizer.decode(sample.tokens)
      wf = episodes[t][b]
      parent = wf.parent_role(role)
      rows.append(_Row(prompt=list(prompt), sample=sample, policy=mapping[role],
                       role=roles.index(role), turn=wf.turn, episode=t * k + b, task=t,
                       branch=b, stage=iteration,
                       parent=last_row[t][b][parent] if parent is not None else -1))
      request_rows[(t, b)].append((role, len(rows) - 1))
      last_row[t][b][role] = len(rows) - 1
    if scorer is not None:
      _score(scorer, tokenizer, episodes, requests, samples, rows, request_rows)
    stage_scores = {}
    # Episodes step independently; threads overlap environments that wait on subprocesses
    # (the code sandbox). Results are consumed in a fixed order, so rollouts stay deterministic.
    results = list(executor.map(lambda item: episodes[item[0][0]][item[0][1]].act(item[1]),
                                responses.items()))
    for ((t, b), answer), result in zip(responses.items(), results):
      score = 0.0
      for role, row in request_rows[(t, b)]:
        outcome = result.outcomes[role]
        rows[row].reward = float(outcome.reward)
        rows[row].team_reward = float(result.team_reward)
        rows[row].invalid = bool(outcome.invalid)
        if outcome.score is not None:
          rows[row].score = float(outcome.score)
        score += float(outcome.reward)
        invalid[role] += int(outcome.invalid)
        actions[role] += 1
        transcripts[t][b].append({"turn": rows[row].turn, "role": role,
                                  "response": answer[role], "reward": outcome.reward,
                                  "invalid": outcome.invalid})
      stage_scores[(t, b)] = score
    if config.tree:
      for t in sorted({t for t, _ in live}):
        chosen = 0 if config.continuation == "sampled" else max(
            range(k), key=lambda b: (stage_scores[(t, b)], -b))
        chosen_rows[t] += [row for _, row in request_rows[(t, chosen)]]
        path = transcripts[t][chosen]
        episodes[t] = [episodes[t][chosen].clone() for _ in range(k)]
        last_row[t] = [dict(last_row[t][chosen]) for _ in range(k)]
        transcripts[t] = [list(path) for _ in range(k)]
    env_seconds += time.perf_counter() - tick
    iteration += 1

  executor.shutdown()
  batch = _to_batch(rows, tokenizer.pad_id, chosen_rows if config.tree else None)
  success = np.asarray([[ep.success for ep in copies] for copies in episodes], np.float32)
  total = time.perf_counter() - started
  generated = sum(len(r.sample.tokens) for r in rows)
  metrics = {
      "rollout/success_rate": float(success[:, 0].mean() if config.tree else success.mean()),
      "rollout/invalid_actions": float(sum(invalid.values())),
      "rollout/invalid_rate": float(sum(invalid.values()) / max(1, sum(actions.values()))),
      "rollout/rows": float(len(rows)),
      "rollout/turns": float(np.mean([copies[0].turn for copies in episodes])),
      "rollout/generated_tokens": float(generated),
      "rollout/generate_calls": float(generate_calls),
      "rollout/iterations": float(iteration),
      "rollout/tokens_per_s": generated / max(generate_seconds, 1e-9),
      "rollout/generate_seconds": generate_seconds,
      "rollout/env_seconds": env_seconds,
      "rollout/seconds": total,
  }
  counted = [ep for copies in episodes for ep in (copies[:1] if config.tree else copies)]
  for ep in counted:
    for name, value in ep.metrics().items():
      metrics[f"rollout/{name}"] = metrics.get(f"rollout/{name}", 0.0) + float(value)
  for role in roles:
    role_rewards = [r.reward for r in rows if roles[r.role] == role]
    if role_rewards:
      metrics[f"train/reward/{role}"] = float(np.mean(role_rewards))
  episode_transcripts = [{"task": t, "branch": b, "success": bool(episodes[t][b].success),
                          "steps": transcripts[t][b]}
                         for t in range(len(workflows)) for b in range(1 if config.tree else k)]
  return Rollout(batch, episode_transcripts, metrics)


def _score(scorer: Scorer, tokenizer: Any, episodes: list[list[Workflow]], requests: list,
           samples: list[Sample], rows: list[_Row], request_rows: dict) -> None:
  """Scores this iteration's responses that their workflows want scored (one scorer call),
  stores each score on its row and hands each episode its roles' scores."""
  scored = []
  for index, (t, b, role, _) in enumerate(requests):
    messages = episodes[t][b].scoring_prompt(role)
    if messages is not None:
      scored.append((index, tokenizer.chat(messages) + list(samples[index].tokens)))
  if not scored:
    return
  values = np.asarray(scorer([tokens for _, tokens in scored]), np.float32)
  by_episode = collections.defaultdict(dict)
  first_row = len(rows) - len(requests)
  for (index, _), value in zip(scored, values):
    t, b, role, _ = requests[index]
    rows[first_row + index].score = float(value)
    by_episode[(t, b)][role] = float(value)
  for (t, b), scores in by_episode.items():
    episodes[t][b].observe_scores(scores)


def _to_batch(rows: list[_Row], pad_id: int, chosen_rows: list[list[int]] | None
              ) -> TurnBatch:
  """Pads rows to a common width and fills the episode return of each row's episode."""
  width = shape_bucket(max(len(r.prompt) + len(r.sample.tokens) for r in rows))
  n = len(rows)
  tokens = np.full((n, width), pad_id, np.int32)
  loss_mask = np.zeros((n, width), np.float32)
  behavior_logp = np.zeros((n, width), np.float32)
  for i, r in enumerate(rows):
    p, m = len(r.prompt), len(r.sample.tokens)
    tokens[i, :p] = r.prompt
    tokens[i, p:p + m] = r.sample.tokens
    loss_mask[i, p:p + m] = 1.0
    behavior_logp[i, p:p + m] = r.sample.logprobs
  # Team return: the sum of stage team rewards along each episode (the chosen path in a tree).
  if chosen_rows is not None:
    owner, counted = (lambda r: r.task), [rows[i] for path in chosen_rows for i in path]
  else:
    owner, counted = (lambda r: r.episode), rows
  returns, seen = collections.defaultdict(float), set()
  for r in counted:
    if (owner(r), r.stage) not in seen:
      seen.add((owner(r), r.stage))
      returns[owner(r)] += r.team_reward
  episode_return = [returns[owner(r)] for r in rows]
  column = lambda name, dtype: np.asarray([getattr(r, name) for r in rows], dtype)
  return TurnBatch(tokens=tokens, loss_mask=loss_mask, behavior_logp=behavior_logp,
                   policy_id=column("policy", np.int32), role_id=column("role", np.int32),
                   turn_id=column("turn", np.int32), episode_id=column("episode", np.int32),
                   task_id=column("task", np.int32), branch_id=column("branch", np.int32),
                   reward=column("reward", np.float32),
                   team_reward=column("team_reward", np.float32),
                   episode_return=np.asarray(episode_return, np.float32),
                   invalid=column("invalid", np.float32), score=column("score", np.float32),
                   parent_id=column("parent", np.int32))
