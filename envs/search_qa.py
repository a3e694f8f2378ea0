"""Search QA: multi-hop questions over a knowledge base no model has seen, answered with a search
tool; a single searching agent, or MATPO's planner and worker (Multi-Agent Tool-Integrated
Policy Optimization, Sec. 3).

Knowledge base (`knowledge_base`): invented entities (two-syllable names such as `Bavo`), each
with one value of every relation (`boss`, `pal`, `foe` by default; functional, so chains are
well defined); a fact is the sentence `<head> <relation> <tail>`. `distractors` adds, per
entity E, that many decoy facts `<decoy> <relation> E` whose words tie with the question's for
the search tool. A question follows 1 to 3 relations from an entity: `Bavo boss foe` asks for
the foe of Bavo's boss; its exact short answer is an entity. Train and test questions never
share an answer entity (`envs.splits.split_of` of the answer).

Search tool (`SearchTool`): BM25 (the `bm25s` package) over the fact sentences, top `top_k`
facts with a positive score; `noise` replaces each result, with that probability, by a
plausible distractor (a false fact with the same head and relation and another tail). It
is shared by every workflow on the same corpus; each episode counts its searches, their results,
the replaced ones and the seconds spent (`Workflow.metrics`: `rollout/search_calls`, ...).

User data: `load_jsonl(path)` reads `{"question", "answer"}` lines (through the TFDS builder of
`envs.data.task_instances`); `corpus` (config) names a JSONL file of `{"text"}` lines to search
instead of the generated base.

Workflows (`kind`):
- `single`: the `agent` searches over several turns, then answers. Compact prompt
  `Q <question>` then one line pair per search `S <query>` / `=<result>;<result>`; responses
  `S <query>` (search) or `A <answer>`.
- `mas` (MATPO): the `planner` sees `P <question>` then `D <subtask>` / `=<returned>` per
  delegation and answers `D <subtask>` (delegate: a nested worker episode) or `A <answer>`; the
  `worker` sees `W <question>|<subtask>` (`W <subtask>` without `query_recap`) then its
  searches, and answers `S <query>` or `F <summary>`. Only the summary returns to the planner;
  without `final_summary` the worker's whole transcript (its searches, their results and its
  last words) does. The planner has `max_turns` turns (a delegation at the last one is past the
  limit: invalid, the episode ends unanswered), a worker `worker_turns` (a worker that has not
  ended by then is invalid and returns `none`).
  Chat style: the same in words, with `<search>`, `<delegate>`, `<summary>` and `<answer>` tags.

Reward (MATPO, Sec. 3.3): at the end, `0.9 accuracy + 0.1 format`; single: format = the
fraction of the agent's actions that parsed; mas: format = 0.5 (fraction of the planner's
actions that parsed) + 0.5 (mean over its workers of 1 if every action parsed and it ended with
a summary, else 0; 0 without workers, as in the reference). An invalid action (unparseable, an
empty or garbled query, a delegation past the limit, a worker that never summarises) is counted
and costs its share of the format reward. Accuracy: the answer equals the gold entity, case and
surrounding punctuation ignored.

Expert: the chain's next hop (search or delegate `<entity> <relation>`, summarise the tail it
found, answer the last tail); heuristic: answer (or summarise) with the tail of the first
result, whether or not it is the fact asked for (a reader that trusts the top hit).
"""
from __future__ import annotations

import functools
import json
import random
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

import bm25s
import numpy as np

from envs import chat
from envs.splits import split_of
from marft.rollout.workflow import Message, RoleOutcome, StageResult, Workflow

NAME = "search_qa"
PROMPT_STYLES = chat.PROMPT_STYLES
ACCURACY_WEIGHT = 0.9
FORMAT_WEIGHT = 0.1
MAX_QUERY_CHARS = 64

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
_WORD = re.compile(r"[A-Za-z]{2,}")


def default_config() -> dict:
  """Tiny defaults: 200 entities, 3 relations, 1-2 hops, top-3 clean results, 4 planner turns
  (the single agent's turn limit too) and 3 worker turns."""
  return {"entities": 200, "relations": ("boss", "pal", "foe"), "kb_seed": 0, "distractors": 0,
          "min_hops": 1, "max_hops": 2, "top_k": 3, "noise": 0.0, "max_turns": 4,
          "worker_turns": 3, "query_recap": True, "final_summary": True, "corpus": ""}


# ---------------------------------------------------------------------------------------------
# Knowledge base and questions


def entity_names(count: int, seed: int) -> list[str]:
  """`count` distinct invented names (consonant-vowel syllables, capitalised), in a seeded
  order."""
  syllables = [c + v for c in _CONSONANTS for v in _VOWELS]
  names = [a + b for a in syllables for b in syllables]
  if count > len(names):
    raise ValueError(f"entities={count}: at most {len(names)} names exist")
  random.Random(f"{NAME}/names/{seed}").shuffle(names)
  return [n.capitalize() for n in names[:count]]


@functools.lru_cache(maxsize=8)
def knowledge_base(entities: int, relations: tuple[str, ...], seed: int, distractors: int
                   ) -> dict[str, Any]:
  """`{"entities": [...], "facts": [(head, relation, tail), ...], "value": {(head, relation):
  tail}}`: every entity has one value of every relation (never itself); `distractors` decoy
  facts `<decoy> <relation> E` per entity E, from decoy entities that appear nowhere else."""
  names = entity_names(entities * (1 + distractors), seed)
  people, decoys = names[:entities], names[entities:]
  rng = random.Random(f"{NAME}/kb/{seed}")
  value = {}
  for head in people:
    for relation in relations:
      value[(head, relation)] = rng.choice([p for p in people if p != head])
  facts = [(h, r, t) for (h, r), t in value.items()]
  decoy = iter(decoys)
  for tail in people:
    for _ in range(distractors):
      facts.append((next(decoy), rng.choice(relations), tail))
  rng.shuffle(facts)
  return {"entities": people, "facts": facts, "value": value}


def fact_text(fact: Sequence[str]) -> str:
  """The sentence of a fact: `Bavo boss Kelu`."""
  return " ".join(fact)


def generate_task(seed: int, split: str, cfg: dict) -> dict:
  """A question of `split`: `question` (`<entity> <relation> ...`), `answer`, `hops` and its
  `chain` of facts."""
  cfg = {**default_config(), **cfg}
  if cfg["corpus"]:
    raise ValueError("a user corpus (task.env.corpus) comes with its questions: give them as "
                     "a JSONL file (load_jsonl), there is nothing to generate")
  if not 1 <= cfg["min_hops"] <= cfg["max_hops"]:
    raise ValueError(f"hops {cfg['min_hops']}..{cfg['max_hops']}: need 1 <= min <= max")
  kb = _kb(cfg)
  rng = random.Random(f"{NAME}/{split}/{seed}")
  for _ in range(10_000):
    entity = rng.choice(kb["entities"])
    relations = [rng.choice(tuple(cfg["relations"]))
                 for _ in range(rng.randint(cfg["min_hops"], cfg["max_hops"]))]
    chain, head = [], entity
    for relation in relations:
      tail = kb["value"][(head, relation)]
      chain.append([head, relation, tail])
      head = tail
    if split_of(f"{NAME}/answer/{head}") == split:
      return {"question": " ".join([entity] + relations), "answer": head, "hops": len(chain),
              "chain": chain}
  raise ValueError(f"no {split} question fits {cfg}")


def load_jsonl(path: str) -> list[dict]:
  """User questions, one `{"question": str, "answer": str}` per line (other keys ignored)."""
  tasks = []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      row = json.loads(line)
      if not isinstance(row.get("question"), str) or not isinstance(row.get("answer"), str):
        raise ValueError(f"{path}:{number}: expected string 'question' and 'answer' keys")
      tasks.append({"question": row["question"], "answer": row["answer"], "hops": 0,
                    "chain": []})
  return tasks


def load_corpus(path: str) -> list[str]:
  """A user corpus: one `{"text": str}` per line."""
  with open(path) as f:
    texts = [json.loads(line)["text"] for line in f if line.strip()]
  if not texts:
    raise ValueError(f"{path}: the corpus is empty")
  return texts


def _kb(cfg: dict) -> dict[str, Any]:
  return knowledge_base(int(cfg["entities"]), tuple(cfg["relations"]), int(cfg["kb_seed"]),
                        int(cfg["distractors"]))


# ---------------------------------------------------------------------------------------------
# The search tool


class SearchTool:
  """BM25 top-k search over `documents` (see the module doc); shared, never copied, by every
  workflow that searches the same corpus (`tool_for`)."""

  def __init__(self, documents: Sequence[str], facts: Sequence[Sequence[str]] | None = None,
               entities: Sequence[str] = ()):
    self.documents = list(documents)
    self.facts = [tuple(f) for f in facts] if facts is not None else None
    self.entities = list(entities)
    self.retriever = bm25s.BM25()
    self.retriever.index(bm25s.tokenize(self.documents, stopwords=None, show_progress=False),
                         show_progress=False)

  def __deepcopy__(self, memo):
    return self  # one index per corpus: cloned workflows share it

  def retrieve(self, query: str, top_k: int) -> list[int]:
    """Indices of the top `top_k` documents with a positive BM25 score, best first."""
    tokens = bm25s.tokenize([query], stopwords=None, return_ids=False, show_progress=False)
    if not tokens[0]:
      return []
    k = min(top_k, len(self.documents))
    ids, scores = self.retriever.retrieve(tokens, k=k, show_progress=False)
    return [int(i) for i, s in zip(ids[0], scores[0]) if s > 0]

  def search(self, query: str, top_k: int, noise: float, rng: random.Random
             ) -> tuple[list[str], int]:
    """The result sentences of `query` and how many were replaced: each, with probability
    `noise`, by a false fact with the same head and relation (generated bases only)."""
    results, replaced = [], 0
    for index in self.retrieve(query, top_k):
      text = self.documents[index]
      if noise > 0 and self.facts is not None and rng.random() < noise:
        head, relation, tail = self.facts[index]
        text = fact_text((head, relation, rng.choice([e for e in self.entities if e != tail])))
        replaced += 1
      results.append(text)
    return results, replaced


_TOOLS: dict[tuple, SearchTool] = {}
_TOOLS_LOCK = threading.Lock()


def tool_for(cfg: dict) -> SearchTool:
  """The (cached) search tool of a task config: over `corpus` when set, else the generated
  knowledge base."""
  cfg = {**default_config(), **cfg}
  key = (cfg["corpus"], int(cfg["entities"]), tuple(cfg["relations"]), int(cfg["kb_seed"]),
         int(cfg["distractors"]))
  with _TOOLS_LOCK:
    if key not in _TOOLS:
      if cfg["corpus"]:
        _TOOLS[key] = SearchTool(load_corpus(cfg["corpus"]))
      else:
        kb = _kb(cfg)
        _TOOLS[key] = SearchTool([fact_text(f) for f in kb["facts"]], kb["facts"],
                                 kb["entities"])
    return _TOOLS[key]


# ---------------------------------------------------------------------------------------------
# Parsing

_COMPACT_ACTIONS = {"S": "search", "A": "answer", "D": "delegate", "F": "summary"}
_COMPACT_LETTERS = {action: letter for letter, action in _COMPACT_ACTIONS.items()}
_ACTIONS = tuple(_COMPACT_ACTIONS.values())


def parse_action(response: str, style: str, allowed: tuple[str, ...]) -> tuple[str, str] | None:
  """`(action, argument)` of a response, the action one of `allowed`, or None (invalid).

  compact: `<letter> <argument>` (S search, A answer, D delegate, F summary); chat: the last
  complete `<action>...</action>` tag outside `<think>` blocks, markdown unwrapped. A response
  that is not text is invalid.
  """
  if not isinstance(response, str):
    return None
  if style == "compact":
    text = response.strip()
    action = _COMPACT_ACTIONS.get(text[:1])
    argument = text[1:].strip()
  else:
    tag = chat.last_tag(chat.strip_thinking(response), _ACTIONS)
    if tag is None:
      return None
    action, argument = tag[0], chat.unwrap_markdown(tag[1])
  if action not in allowed or not argument:
    return None
  return action, argument


def valid_query(query: str) -> bool:
  """A query the tool takes: at most `MAX_QUERY_CHARS` characters with a word of 2+ letters."""
  return len(query) <= MAX_QUERY_CHARS and bool(_WORD.search(query))


def same_answer(answer: str, gold: str) -> bool:
  """Exact match up to case, surrounding whitespace and punctuation."""
  clean = lambda s: s.strip().strip(".,;:!?\"'`").strip().lower()
  return clean(answer) == clean(gold)


# ---------------------------------------------------------------------------------------------
# Workflows


class _SearchEpisode(Workflow):
  """What both workflows share: the task, its tool, the noise stream and the final reward."""

  def __init__(self, task: dict, cfg: dict, max_turns: int, prompt_style: str):
    super().__init__(task, max_turns, chat.check_prompt_style(prompt_style))
    self.cfg = {**default_config(), **cfg}
    self.tool = tool_for(self.cfg)
    self.rng = random.Random(f"{NAME}/noise/{task['question']}")
    self.answer: str | None = None
    self.finished = False
    self.counters = {"search_calls": 0, "search_results": 0, "search_replaced": 0,
                     "search_seconds": 0.0}

  @property
  def success(self) -> bool:
    return self.answer is not None and same_answer(self.answer, self.task["answer"])

  @property
  def done(self) -> bool:
    return self.finished

  def metrics(self) -> dict[str, float]:
    return dict(self.counters)

  def search(self, query: str) -> str:
    started = time.perf_counter()
    results, replaced = self.tool.search(query, int(self.cfg["top_k"]),
                                         float(self.cfg["noise"]), self.rng)
    self.counters["search_calls"] += 1
    self.counters["search_results"] += len(results)
    self.counters["search_replaced"] += replaced
    self.counters["search_seconds"] += time.perf_counter() - started
    return ";".join(results) if results else "nothing"

  def final_reward(self, format_score: float) -> float:
    return ACCURACY_WEIGHT * float(self.success) + FORMAT_WEIGHT * format_score

  def _expert_chain(self) -> list[list[str]]:
    if not self.task["chain"]:
      raise ValueError("a question without its solution chain (user data) has no expert")
    return self.task["chain"]


def _tail_found(fact: Sequence[str], result: str) -> bool:
  return fact_text(fact) in result.split(";")


def _hops_found(chain: Sequence[Sequence[str]], observations: Sequence[str], found) -> int:
  """How many hops of `chain`, in order, the observations revealed (`found(fact, text)`)."""
  hops = 0
  for text in observations:
    if hops < len(chain) and found(chain[hops], text):
      hops += 1
  return hops


def _first_tail(result: str) -> str:
  words = result.split(";")[0].split()
  return words[-1] if words else "none"


class SingleAgentWorkflow(_SearchEpisode):
  """One agent that searches, reads and answers (see the module doc)."""

  roles = ("agent",)

  def __init__(self, task: dict, cfg: dict, max_turns: int, prompt_style: str = "compact"):
    super().__init__(task, cfg, max_turns, prompt_style)
    self.steps: list[tuple[str, str]] = []  # (query, result)
    self.valid = 0
    self.actions = 0

  def stages(self):
    return (("agent",),)

  def prompt(self, role: str) -> list[Message]:
    if self.prompt_style == "compact":
      return [{"role": "user", "content": "\n".join(
          [f"Q {self.task['question']}"] + [f"S {q}\n={r}" for q, r in self.steps])}]
    lines = [f"Question: {self.task['question']}"]
    for q, r in self.steps:
      lines.append(f"You searched: {q}\nResults: {r}")
    lines.append(chat.turn_words(self.turn, self.max_turns))
    return chat.chat_messages(_chat_system("agent"), "\n\n".join(lines))

  def act(self, responses: dict[str, str]) -> StageResult:
    parsed = parse_action(responses.get("agent"), self.prompt_style, ("search", "answer"))
    invalid = parsed is None or (parsed[0] == "search" and not valid_query(parsed[1]))
    self.actions += 1
    self.valid += int(not invalid)
    if not invalid and parsed[0] == "answer":
      self.answer, self.finished = parsed[1], True
    elif not invalid:
      self.steps.append((parsed[1], self.search(parsed[1])))
    else:
      self.steps.append((parsed[1] if parsed else "?", "invalid"))
    self.advance()
    if self.turn >= self.max_turns:
      self.finished = True
    reward = self.final_reward(self.valid / self.actions) if self.finished else 0.0
    return StageResult({"agent": RoleOutcome(reward, invalid)}, team_reward=reward)

  def expert_response(self, role: str) -> str:
    chain = self._expert_chain()
    hops = _hops_found(chain, [r for _, r in self.steps], lambda fact, r: _tail_found(fact, r))
    if hops == len(chain):
      return _render("answer", chain[-1][2], self.prompt_style)
    if self.turn == self.max_turns - 1:
      return _render("answer", _first_tail(self.steps[-1][1]) if self.steps else "none",
                     self.prompt_style)
    return _render("search", f"{chain[hops][0]} {chain[hops][1]}", self.prompt_style)

  def heuristic_response(self, role: str) -> str | None:
    if not self.steps:
      return None
    return _render("answer", _first_tail(self.steps[-1][1]), self.prompt_style)


def _render(action: str, argument: str, style: str) -> str:
  """The response that takes `action` with `argument`, in `style`."""
  if style == "compact":
    return f"{_COMPACT_LETTERS[action]} {argument}"
  return f"<{action}>{argument}</{action}>"


def _chat_system(role: str) -> str:
  tools = {
      "agent": ("You answer a question about invented people by searching a knowledge base. "
                "Each search returns facts written `<person> <relation> <person>`. To search, "
                "write <search>query</search>; when you know the answer, write "
                "<answer>name</answer>. The question `A r1 r2` asks for the r2 of the r1 of A."),
      "planner": ("You are the planner. You answer a question about invented people by "
                  "delegating one-hop lookups to a worker: write <delegate>subtask</delegate> "
                  "(e.g. `Bavo boss`) and the worker's summary comes back; when you know the "
                  "answer, write <answer>name</answer>. The question `A r1 r2` asks for the r2 "
                  "of the r1 of A."),
      "worker": ("You are a worker. You look up one fact for the planner by searching a "
                 "knowledge base of facts written `<person> <relation> <person>`: write "
                 "<search>query</search>; when you have found it, end with "
                 "<summary>the answer</summary>, which is all the planner will see."),
  }
  return tools[role] + " Use exactly one tag per reply."


class MatpoWorkflow(_SearchEpisode):
  """MATPO's planner and its nested workers in one episode (see the module doc). The acting
  role is the worker while a delegation is open, else the planner; worker rows name the
  planner as their parent (`parent_role`)."""

  roles = ("planner", "worker")

  def __init__(self, task: dict, cfg: dict, max_turns: int, prompt_style: str = "compact"):
    super().__init__(task, cfg, max_turns, prompt_style)
    self.delegations: list[tuple[str, str]] = []  # (subtask, what came back)
    self.planner_turns = 0
    self.planner_valid = 0
    self.worker_success: list[float] = []
    self.subtask: str | None = None  # the open delegation
    self.worker_steps: list[tuple[str, str]] = []
    self.worker_valid = True

  def stages(self):
    return (("planner",),)

  def acting_roles(self) -> tuple[str, ...]:
    return ("worker",) if self.subtask is not None else ("planner",)

  def parent_role(self, role: str) -> str | None:
    return "planner" if role == "worker" else None

  def prompt(self, role: str) -> list[Message]:
    question = self.task["question"]
    if role == "planner":
      if self.prompt_style == "compact":
        return [{"role": "user", "content": "\n".join(
            [f"P {question}"] + [f"D {s}\n={r}" for s, r in self.delegations])}]
      lines = [f"Question: {question}"] + [f"You delegated: {s}\nThe worker returned: {r}"
                                           for s, r in self.delegations]
      lines.append(chat.turn_words(self.planner_turns, self.max_turns))
      return chat.chat_messages(_chat_system("planner"), "\n\n".join(lines))
    recap = self.cfg["query_recap"]
    if self.prompt_style == "compact":
      head = f"W {question}|{self.subtask}" if recap else f"W {self.subtask}"
      return [{"role": "user", "content": "\n".join(
          [head] + [f"S {q}\n={r}" for q, r in self.worker_steps])}]
    lines = ([f"[CONTEXT] The main question: {question}"] if recap else []) + [
        f"Your subtask: {self.subtask}"]
    lines += [f"You searched: {q}\nResults: {r}" for q, r in self.worker_steps]
    lines.append(chat.turn_words(len(self.worker_steps), int(self.cfg["worker_turns"])))
    return chat.chat_messages(_chat_system("worker"), "\n\n".join(lines))

  def act(self, responses: dict[str, str]) -> StageResult:
    if self.subtask is not None:
      outcome = self._worker_act(responses.get("worker"))
      role = "worker"
    else:
      outcome = self._planner_act(responses.get("planner"))
      role = "planner"
    self.advance()
    reward = self.final_reward(self.format_score()) if self.finished else 0.0
    if self.finished:
      outcome.reward = reward
    return StageResult({role: outcome}, team_reward=reward)

  def format_score(self) -> float:
    """0.5 (planner's parsed fraction) + 0.5 (mean worker success; 0 without workers)."""
    planner = self.planner_valid / max(self.planner_turns, 1)
    workers = float(np.mean(self.worker_success)) if self.worker_success else 0.0
    return 0.5 * planner + 0.5 * workers

  def _planner_act(self, response: str) -> RoleOutcome:
    parsed = parse_action(response, self.prompt_style, ("delegate", "answer"))
    last = self.planner_turns == self.max_turns - 1
    self.planner_turns += 1
    invalid = parsed is None or (parsed[0] == "delegate" and (last or not valid_query(parsed[1])))
    self.planner_valid += int(not invalid)
    if not invalid and parsed[0] == "answer":
      self.answer, self.finished = parsed[1], True
    elif not invalid:
      self.subtask, self.worker_steps, self.worker_valid = parsed[1], [], True
    else:
      self.delegations.append((parsed[1] if parsed else "?", "invalid"))
    if self.planner_turns >= self.max_turns and self.subtask is None:
      self.finished = True
    return RoleOutcome(0.0, invalid)

  def _worker_act(self, response: str) -> RoleOutcome:
    parsed = parse_action(response, self.prompt_style, ("search", "summary"))
    invalid = parsed is None or (parsed[0] == "search" and not valid_query(parsed[1]))
    last = len(self.worker_steps) == int(self.cfg["worker_turns"]) - 1
    summary = None
    if not invalid and parsed[0] == "summary":
      summary = parsed[1]
    elif not invalid:
      self.worker_steps.append((parsed[1], self.search(parsed[1])))
    else:
      self.worker_steps.append((parsed[1] if parsed else "?", "invalid"))
    if summary is None and last:
      invalid = True  # a worker that never ends with a summary
    self.worker_valid &= not invalid
    if summary is not None or last:
      self._return(summary)
    return RoleOutcome(0.0, invalid)

  def _return(self, summary: str | None) -> None:
    """Closes the open delegation: the summary (or, without `final_summary`, the worker's
    transcript) goes back to the planner."""
    if self.cfg["final_summary"]:
      returned = summary if summary is not None else "none"
    else:
      returned = " ".join([f"S {q} ={r}" for q, r in self.worker_steps]
                          + [f"F {summary}" if summary is not None else "F none"])
    self.delegations.append((self.subtask, returned))
    self.worker_success.append(float(self.worker_valid and summary is not None))
    self.subtask = None

  def expert_response(self, role: str) -> str:
    chain = self._expert_chain()
    if role == "worker":
      fact = next((f for f in chain if f"{f[0]} {f[1]}" == self.subtask), None)
      if fact is not None and self.worker_steps and _tail_found(fact, self.worker_steps[-1][1]):
        return _render("summary", fact[2], self.prompt_style)
      if len(self.worker_steps) == int(self.cfg["worker_turns"]) - 1:
        return _render("summary", _first_tail(self.worker_steps[-1][1])
                       if self.worker_steps else "none", self.prompt_style)
      return _render("search", self.subtask, self.prompt_style)
    returned = [r for _, r in self.delegations]
    hops = _hops_found(chain, returned, lambda fact, r: r.split()[-1:] == [fact[2]])
    if hops == len(chain):
      return _render("answer", chain[-1][2], self.prompt_style)
    if self.planner_turns == self.max_turns - 1:
      return _render("answer", returned[-1].split()[-1] if returned else "none",
                     self.prompt_style)
    return _render("delegate", f"{chain[hops][0]} {chain[hops][1]}", self.prompt_style)

  def heuristic_response(self, role: str) -> str | None:
    if role == "worker" and self.worker_steps:
      return _render("summary", _first_tail(self.worker_steps[-1][1]), self.prompt_style)
    return None


def make_workflow(task: dict, kind: str, cfg: dict, max_turns: int,
                  prompt_style: str = "compact") -> Workflow:
  """A `"single"` (agent) or `"mas"` (MATPO planner and worker) episode of `task`."""
  if kind == "single":
    return SingleAgentWorkflow(task, cfg, max_turns, prompt_style)
  if kind == "mas":
    return MatpoWorkflow(task, cfg, max_turns, prompt_style)
  raise ValueError(f"unknown workflow kind {kind!r}; choose 'single' or 'mas'")
