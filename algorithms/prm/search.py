"""Inference-time search over multi-agent workflows with a sample budget: straight-through,
majority vote, Best-of-N, step-level beam search and PRM-guided MCTS (MASPRM's inference
section; AgentPRM's per-step Best-of-N).

A search node is a workflow state (a cloned `Workflow`); an action is one response per role
acting in its current stage (a joint action; one role per stage in sequential systems). A
step is what a process reward model reads: the acting role's prompt followed by its response
(`step_tokens`); a `StepScorer` maps token lists of steps to one value each in [-1, 1] (MASPRM's
`tanh(z)`; `2 sigmoid(z) - 1` for a BCE-trained AgentPRM), and a joint action's value is the
mean over its roles' steps. An outcome reward model (ORM) is a `StepScorer` read at the last
step of a finished episode.

Every strategy batches the nodes it extends in one iteration into one `sampler` call and
scores the new steps in one `scorer` call, and reports what it spent (`Spend`: responses
sampled, their tokens, calls, leaves per call) beside each task's `Outcome`.
"""
from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from algorithms.prm import masprm, mcts
from marft.rollout.engine import Sampler
from marft.rollout.workflow import Workflow

STRATEGIES = ("straight_through", "majority_vote", "best_of_n", "beam", "mcts")

# Step token lists -> one value per step, in [-1, 1].
StepScorer = Callable[[Sequence[Sequence[int]]], np.ndarray]


@dataclasses.dataclass
class Spend:
  """What a search spent: responses sampled and their tokens, `sampler` and `scorer` calls,
  and the nodes (leaves) extended by each sampler call."""

  samples: int = 0
  tokens: int = 0
  generate_calls: int = 0
  scorer_calls: int = 0
  scored_steps: int = 0
  leaves_per_call: list[int] = dataclasses.field(default_factory=list)

  def metrics(self, tasks: int) -> dict[str, float]:
    """Per-question means (`samples_per_question`, `tokens_per_question`) and call counts."""
    return {"samples_per_question": self.samples / max(tasks, 1),
            "tokens_per_question": self.tokens / max(tasks, 1),
            "generate_calls": float(self.generate_calls),
            "scorer_calls": float(self.scorer_calls),
            "leaves_per_call": float(np.mean(self.leaves_per_call or [0]))}


class Candidate(NamedTuple):
  """A joint action: one response per acting role, its sampled tokens, summed log-prob, and
  the step token lists a PRM reads (one per role)."""

  responses: dict[str, str]
  tokens: int
  logprob: float
  steps: list[list[int]]


@dataclasses.dataclass
class Outcome:
  """One question's result: the chosen finished episode, its answer and success, and the
  responses and tokens spent on this question."""

  workflow: Workflow
  answer: str | None
  success: bool
  samples: int
  tokens: int


def step_tokens(workflow: Workflow, role: str, response_tokens: Sequence[int],
                tokenizer: Any) -> list[int]:
  """What a PRM reads for `role`'s step: its prompt (chat-rendered) then its response."""
  return list(tokenizer.chat(workflow.prompt(role))) + [int(t) for t in response_tokens]


def sample_candidates(nodes: Sequence[Workflow], n: int, sampler: Sampler, tokenizer: Any,
                      key: jax.Array, spend: Spend, per_question: list[list[int]] | None = None,
                      questions: Sequence[int] | None = None) -> list[list[Candidate]]:
  """`n` joint actions for each node, all in one `sampler` call (`per_question[q]` adds the
  responses and tokens spent for node i to question `questions[i]`)."""
  requests = [(i, role, tokenizer.chat(node.prompt(role)))
              for i, node in enumerate(nodes) for _ in range(n) for role in node.acting_roles()]
  if not requests:
    return [[] for _ in nodes]
  samples = sampler([prompt for _, _, prompt in requests], key)
  spend.generate_calls += 1
  spend.leaves_per_call.append(len(nodes))
  out: list[list[Candidate]] = [[] for _ in nodes]
  cursor = 0
  for i, node in enumerate(nodes):
    roles = node.acting_roles()
    for _ in range(n):
      responses, tokens, logprob, steps = {}, 0, 0.0, []
      for role in roles:
        _, _, prompt = requests[cursor]
        sample = samples[cursor]
        cursor += 1
        responses[role] = tokenizer.decode(sample.tokens)
        tokens += len(sample.tokens)
        logprob += float(np.sum(sample.logprobs))
        steps.append(list(prompt) + [int(t) for t in sample.tokens])
      out[i].append(Candidate(responses, tokens, logprob, steps))
      spend.samples += len(roles)
      spend.tokens += tokens
      if per_question is not None:
        q = questions[i] if questions is not None else i
        per_question[q][0] += len(roles)
        per_question[q][1] += tokens
  return out


def step(node: Workflow, candidate: Candidate) -> Workflow:
  """The workflow after `candidate` (a clone; `node` is unchanged)."""
  child = node.clone()
  child.act(dict(candidate.responses))
  return child


def candidate_values(candidates: Sequence[Candidate], scorer: StepScorer, spend: Spend
                     ) -> np.ndarray:
  """Each joint action's value: the mean of its steps' scores, all steps in one scorer call."""
  if not candidates:
    return np.zeros((0,), np.float32)
  steps = [s for c in candidates for s in c.steps]
  scores = np.asarray(scorer(steps), np.float32)
  spend.scorer_calls += 1
  spend.scored_steps += len(steps)
  values, cursor = [], 0
  for c in candidates:
    values.append(float(np.mean(scores[cursor:cursor + len(c.steps)])))
    cursor += len(c.steps)
  return np.asarray(values, np.float32)


def _outcome(workflow: Workflow, cost: list[int]) -> Outcome:
  return Outcome(workflow, workflow.final_answer(), bool(workflow.success), cost[0], cost[1])


def sample_episodes(workflows: Sequence[Workflow], n: int, sampler: Sampler, tokenizer: Any,
                    key: jax.Array, spend: Spend, cost: list[list[int]]
                    ) -> list[list[tuple[Workflow, Candidate]]]:
  """`n` independent episodes of each workflow played to the end (one sampler call per
  iteration for every live episode); each finished episode with its last joint action."""
  episodes = [[(wf.clone(), None) for _ in range(n)] for wf in workflows]
  iteration = 0
  while True:
    live = [(t, b) for t in range(len(workflows)) for b in range(n)
            if not episodes[t][b][0].done]
    if not live:
      return episodes
    candidates = sample_candidates([episodes[t][b][0] for t, b in live], 1, sampler, tokenizer,
                                   jax.random.fold_in(key, iteration), spend, cost,
                                   [t for t, _ in live])
    for (t, b), (candidate,) in zip(live, candidates):
      node = episodes[t][b][0]
      node.act(dict(candidate.responses))
      episodes[t][b] = (node, candidate)
    iteration += 1


def straight_through(workflows: Sequence[Workflow], sampler: Sampler, tokenizer: Any,
                     key: jax.Array) -> tuple[list[Outcome], Spend]:
  """One pass of the multi-agent system per question (MASPRM's baseline)."""
  spend, cost = Spend(), [[0, 0] for _ in workflows]
  episodes = sample_episodes(workflows, 1, sampler, tokenizer, key, spend, cost)
  return [_outcome(e[0][0], c) for e, c in zip(episodes, cost)], spend


def majority_vote(workflows: Sequence[Workflow], sampler: Sampler, tokenizer: Any,
                  key: jax.Array, *, n: int) -> tuple[list[Outcome], Spend]:
  """`n` passes per question; the answer is the most frequent final answer (ties: the first
  reached; episodes without an answer do not vote)."""
  spend, cost = Spend(), [[0, 0] for _ in workflows]
  episodes = sample_episodes(workflows, n, sampler, tokenizer, key, spend, cost)
  outcomes = []
  for copies, c in zip(episodes, cost):
    votes = collections.Counter(wf.final_answer() for wf, _ in copies
                                if wf.final_answer() is not None)
    chosen = copies[0][0]
    if votes:
      answer = max(votes, key=lambda a: (votes[a], -[w.final_answer() for w, _ in copies]
                                         .index(a)))
      chosen = next(wf for wf, _ in copies if wf.final_answer() == answer)
    outcomes.append(_outcome(chosen, c))
  return outcomes, spend


def best_of_n(workflows: Sequence[Workflow], sampler: Sampler, tokenizer: Any, key: jax.Array,
              *, n: int, scorer: StepScorer) -> tuple[list[Outcome], Spend]:
  """`n` passes per question; the chosen one has the highest outcome score (`scorer` read at
  its last step: an ORM, or a PRM's value of the final action); ties: the first."""
  spend, cost = Spend(), [[0, 0] for _ in workflows]
  episodes = sample_episodes(workflows, n, sampler, tokenizer, key, spend, cost)
  values = candidate_values([c for copies in episodes for _, c in copies], scorer, spend)
  outcomes = []
  for t, (copies, c) in enumerate(zip(episodes, cost)):
    best = int(np.argmax(values[t * n:(t + 1) * n]))
    outcomes.append(_outcome(copies[best][0], c))
  return outcomes, spend


def beam_search(workflows: Sequence[Workflow], sampler: Sampler, tokenizer: Any,
                key: jax.Array, *, scorer: StepScorer, width: int = 5, beams: int = 1
                ) -> tuple[list[Outcome], Spend]:
  """Step-level beam search (MASPRM's inference): at every agent step each live beam samples
  `width` joint actions; of its question's children (and already finished beams) the `beams`
  with the highest PRM value survive (ties: the earlier). The answer is the best finished
  beam."""
  spend, cost = Spend(), [[0, 0] for _ in workflows]
  # per question: (workflow, value) beams
  state = [[(wf.clone(), 0.0)] for wf in workflows]
  iteration = 0
  while True:
    live = [(t, i) for t, beam in enumerate(state) for i, (wf, _) in enumerate(beam)
            if not wf.done]
    if not live:
      break
    candidates = sample_candidates([state[t][i][0] for t, i in live], width, sampler,
                                   tokenizer, jax.random.fold_in(key, iteration), spend, cost,
                                   [t for t, _ in live])
    values = candidate_values([c for group in candidates for c in group], scorer, spend)
    pool = {t: [b for b in beam if b[0].done] for t, beam in enumerate(state)}
    cursor = 0
    for (t, i), group in zip(live, candidates):
      for candidate in group:
        pool[t].append((step(state[t][i][0], candidate), float(values[cursor])))
        cursor += 1
    for t in pool:
      if any(not wf.done for wf, _ in state[t]):
        state[t] = sorted(pool[t], key=lambda b: -b[1])[:beams]  # stable: ties keep order
    iteration += 1
  return [_outcome(max(beam, key=lambda b: b[1])[0], c) for beam, c in zip(state, cost)], spend


def _stack(trees: Sequence[mcts.Tree]) -> mcts.Tree:
  return jax.tree.map(lambda *x: jnp.stack(x), *trees)


class SearchTrees(NamedTuple):
  """The trees an MCTS run built (`mcts.Tree`, batched over questions), each node's workflow
  state and the step tokens of the action that reached it (None at the root)."""

  trees: mcts.Tree
  states: list[list[Workflow | None]]
  steps: list[list[list[list[int]] | None]]


def run_mcts(workflows: Sequence[Workflow], sampler: Sampler, tokenizer: Any, key: jax.Array,
             *, children: int, simulations: int, c: float, rule: str = "uct",
             scorer: StepScorer | None = None, orm: StepScorer | None = None,
             patience: int = 0, spend: Spend | None = None,
             cost: list[list[int]] | None = None) -> SearchTrees:
  """Monte Carlo tree search over workflow states, one tree per question, all trees advanced
  together: each iteration selects one leaf per tree (UCT, c; or PUCT with length-normalised
  log-prob priors), samples `children` joint actions for every selected non-terminal leaf in
  one sampler call, expands them, and backs up values (PUCT's `c_init` is `c`).

  With a `scorer` (PRM-guided MCTS): each new child is initialised with its PRM value (one
  scorer call per iteration; at terminals the `orm`'s where given) and backed up; a selected
  terminal backs up its stored value again. Without one (MASPRM's data search): a new terminal
  is graded +1 / -1 by the task's checker at creation and backed up; the simulation goes on
  down through the new children (unvisited children are selected first) until it reaches a
  terminal. A simulation is one backed-up value; a tree stops after `simulations` of them (its
  root's visits; siblings backed up together may pass it by fewer than `children`), or early
  (`patience` > 0) when its root's most-visited action has not changed for that many
  iterations that backed up.
  """
  spend = spend if spend is not None else Spend()
  cost = cost if cost is not None else [[0, 0] for _ in workflows]
  b = len(workflows)
  capacity = 1 + simulations * children + children
  trees = _stack([mcts.init_tree(capacity, children) for _ in workflows])
  states: list[list[Workflow | None]] = [[wf.clone()] + [None] * (capacity - 1)
                                         for wf in workflows]
  steps: list[list[Any]] = [[None] * capacity for _ in workflows]
  values = np.zeros((b, capacity), np.float32)  # each node's own value (PRM / graded)
  done_sims = np.zeros(b, np.int64)
  stopped = np.zeros(b, bool)
  stop_state = jax.vmap(lambda _: mcts.init_stop())(jnp.arange(b))
  update_stop = jax.jit(jax.vmap(lambda state, tree: mcts.update_stop(
      state, tree, patience=patience if patience > 0 else 2**30)))
  constants = {"c": c} if rule == "uct" else {"c_init": c}
  select = jax.jit(jax.vmap(lambda tree: mcts.select(tree, rule=rule, **constants)))
  expand = jax.jit(jax.vmap(mcts.expand))
  backup = jax.jit(jax.vmap(mcts.backup_children))
  iteration = 0
  while not stopped.all():
    leaves = np.asarray(select(trees)[0])
    to_expand, graded = [], np.zeros((b, children), np.float32)
    graded_ids = np.full((b, children), -1, np.int32)
    for t in range(b):
      if stopped[t]:
        continue
      node = int(leaves[t])
      if states[t][node].done:  # a selected terminal backs up its own value again
        graded[t, 0], graded_ids[t, 0] = values[t, node], node
      else:
        to_expand.append((t, node))
    if to_expand:
      groups = sample_candidates([states[t][node] for t, node in to_expand], children, sampler,
                                 tokenizer, jax.random.fold_in(key, iteration), spend, cost,
                                 [t for t, _ in to_expand])
      flat = [cand for group in groups for cand in group]
      scores = candidate_values(flat, scorer, spend) if scorer is not None else None
      terminal = np.zeros((b, children), bool)
      valid = np.zeros((b, children), bool)
      priors = np.full((b, children), 1.0 / children, np.float32)
      parents = np.zeros(b, np.int32)
      new_states = {}
      for g, ((t, node), group) in enumerate(zip(to_expand, groups)):
        parents[t] = node
        valid[t] = True
        logits = np.asarray([cand.logprob / max(cand.tokens, 1) for cand in group])
        priors[t] = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        for a, cand in enumerate(group):
          child = step(states[t][node], cand)
          terminal[t, a] = child.done
          new_states[(t, a)] = (child, cand)
      terminal_value = _terminal_values(new_states, None if orm is scorer else orm, spend)
      trees, ids = expand(trees, jnp.asarray(parents), jnp.asarray(priors),
                          jnp.zeros((b, children), jnp.float32), jnp.asarray(terminal),
                          jnp.asarray(valid))
      ids = np.asarray(ids)
      for g, ((t, node), group) in enumerate(zip(to_expand, groups)):
        for a in range(children):
          child, cand = new_states[(t, a)]
          if ids[t, a] < 0:
            continue
          states[t][ids[t, a]], steps[t][ids[t, a]] = child, cand.steps
          if child.done:
            value = (terminal_value[(t, a)] if (t, a) in terminal_value
                     else masprm.grade_terminal(child.success) if scorer is None
                     else float(scores[g * children + a]))
          else:
            value = float(scores[g * children + a]) if scorer is not None else 0.0
          values[t, ids[t, a]] = value
          if scorer is not None or child.done:
            graded[t, a], graded_ids[t, a] = value, ids[t, a]
    backed = (graded_ids >= 0).any(axis=1)
    if backed.any():
      trees = backup(trees, jnp.asarray(graded_ids), jnp.asarray(graded))
    if backed.any():
      updated, patient = update_stop(stop_state, trees)
      stop_state = jax.tree.map(lambda new, old: jnp.where(jnp.asarray(backed), new, old),
                                updated, stop_state)
      done_sims += (graded_ids >= 0).sum(axis=1)
      stopped |= backed & ((done_sims >= simulations) | np.asarray(patient))
    # A tree whose every path is exhausted (nothing to expand, nothing backed up) stops too.
    stopped |= ~backed & np.asarray([not any(t == x for x, _ in to_expand) for t in range(b)])
    iteration += 1
  return SearchTrees(trees, states, steps)


def _terminal_values(new_states: dict, orm: StepScorer | None, spend: Spend
                     ) -> dict[tuple[int, int], float]:
  """The ORM's value of every new terminal child (one scorer call), or none without an ORM
  (also when the ORM is the PRM itself: its values of the new children are already in)."""
  if orm is None:
    return {}
  keys = [k for k, (child, _) in new_states.items() if child.done]
  values = candidate_values([new_states[k][1] for k in keys], orm, spend)
  return {k: float(v) for k, v in zip(keys, values)}


def prm_mcts(workflows: Sequence[Workflow], sampler: Sampler, tokenizer: Any, key: jax.Array,
             *, scorer: StepScorer, orm: StepScorer | None = None, children: int = 3,
             simulations: int = 40, c: float = 2.0, rule: str = "uct", patience: int = 0
             ) -> tuple[list[Outcome], Spend]:
  """PRM-guided MCTS (MASPRM's inference): `run_mcts` with the PRM (and an ORM at
  terminals); the answer follows the greedy highest-mean path from the root, finished by one
  straight-through pass where that path stops before a terminal."""
  spend, cost = Spend(), [[0, 0] for _ in workflows]
  key, finish_key = jax.random.split(key)
  search = run_mcts(workflows, sampler, tokenizer, key, children=children,
                    simulations=simulations, c=c, rule=rule, scorer=scorer, orm=orm,
                    patience=patience, spend=spend, cost=cost)
  ends = []
  for t in range(len(workflows)):
    tree_t = jax.tree.map(lambda x, t=t: x[t], search.trees)
    node = int(mcts.greedy_leaf(tree_t))
    ends.append(search.states[t][node])
  unfinished = [t for t, wf in enumerate(ends) if not wf.done]
  if unfinished:
    finished = sample_episodes([ends[t] for t in unfinished], 1, sampler, tokenizer,
                               finish_key, spend,
                               sub := [[0, 0] for _ in unfinished])
    for t, episodes, c in zip(unfinished, finished, sub):
      ends[t] = episodes[0][0]
      cost[t][0] += c[0]
      cost[t][1] += c[1]
  return [_outcome(wf, c) for wf, c in zip(ends, cost)], spend
