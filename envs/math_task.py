"""Math word problems with exact numeric answers, after the math row of the workflow table in
the AT-GRPO paper ("Stronger Together"). Registered as `"math"`.

Tasks: `{"question": str, "answer": int | float, "expression": str}`.
- `generate_task`: synthetic problems from templates with `min_steps`..`max_steps`
  operations (2-3 by default) on numbers 2..`max_number` (9), short enough for a
  character-level model (`"Ann has 3 bags of 4 nuts and loses 2. Left?"`, answer 10,
  expression `3*4-2`; every expression is at most 7 characters at the defaults). Answers
  are integers >= 0. One question in ten, by a hash of its text, belongs to the test split.
- `load_jsonl`: GSM8K/MATH-style files (`question`, `answer` per line) into the same dicts.

Workflows (one user message per prompt; `<history>` lists the earlier turns of both roles,
each as ` T<expression>=<value> R<answer>`, e.g. ` T3*4-2=10 R12`; `?` for an answer that
did not parse, `err` for a failed calculation):
- single: role `agent` sees `<question>` and answers a number; the episode is that one turn.
- mas: one stage per turn in which both roles act in parallel: `tool` sees
  `T <question><history>` and writes an arithmetic expression, computed by
  `envs.arithmetic_eval.evaluate` (no eval/exec); `reasoner` sees `R <question><history>` and
  answers a number. The episode ends when the reasoner's answer equals the tool's value of
  the same turn (agreement), or at the turn limit. Success: the reasoner's final answer is
  correct (an agreement on a wrong number fails).

Chat prompts (`envs.chat`): a system message with the role, the rules and the answer format,
then the question and the earlier turns in words; answers inside `<answer>...</answer>` are
free-form and graded with `math-verify` (LaTeX, fractions, `\\boxed{}`, units and words
around the number); the tool may write `3*4-2 = 10` (what follows `=` is ignored).

Answers (compact): a decimal number (`12`, `-3`, `2.5`, `1,000`; text after a last `####` if present),
compared with a tolerance of 1e-6 relative. Rewards (the spec's numbers):
- reasoner / agent local: 1 correct, 0 wrong (an unparseable answer is wrong and marked
  invalid);
- tool local: 1 if its value is the answer, 0 if another number, -1 if the calculation failed
  (parse error, forbidden construct, division by zero, bounds; marked invalid);
- team: 1 if the reasoner (agent) is correct this turn, else 0. No failure penalty.

Expert: the tool writes the task's expression, the reasoner (agent) the answer.

Sequential workflows (MARFT, Liao et al. 2025): one agent per stage, each seeing the earlier
agents' outputs of the same step; a step is one turn of `reasoner`, `actor` (and `verifier`).
- dual: `reasoner` sees `P <question><history>` and writes an arithmetic expression planning
  the computation (not computed, not shown with a value); `actor` sees
  `A <question><history> P<expression>` and answers a number.
- trio: as dual, then `verifier` sees `V <question><history> P<expression> A<answer>` and
  writes `y` if it judges the actor's answer correct, else `n` (chat: `<answer>yes</answer>`
  or `<answer>no</answer>`, any case).
`<history>` lists the finished steps, each as ` P<expression> A<answer>` (dual) or
` P<expression> A<answer> V<y|n>` (trio) then the judge's ` x` (incorrect; a correct step ends
the episode), e.g. ` P3*4 A12 Vn x`; `?` for an answer or verdict that did not parse. Rewards
(after MARFT's MATH env: the step's score is the fraction of answer-producing agents that are
correct, here the actor alone):
- reasoner local: 1 if its expression evaluates (`envs.arithmetic_eval`) to the answer, else
  0; one that does not evaluate is invalid (no penalty);
- actor local: 1 correct, 0 wrong (unparseable: 0, invalid);
- verifier local: 1 if its verdict is the truth about the actor's answer, 0 if not, invalid
  (0) if it is neither yes nor no;
- team: the step's score (1 if the actor is correct, else 0) on the last stage of the step,
  0 on the other stages. The episode ends after the step in which the actor is correct
  (success) or at the turn limit; it never fails early.
Expert: the reasoner writes the task's expression, the actor the answer, the verifier the
truth about the actor's answer of the step.

Discussion (MAPoRL, Park et al. 2025; `envs.discussion`): `env.agents` agents (default 2, read
only when set, so the other workflows' settings are unchanged) answer the question over
`max_turns` turns, seeing each other's previous answers with their verifier scores; answers are
graded as the single agent's (compact numbers, chat `math-verify`).
"""
from __future__ import annotations

import json
import random
import re

import math_verify

from envs import chat, discussion
from envs.splits import split_of
from envs.arithmetic_eval import EvalError, Number, evaluate
from marft.rollout.workflow import (Message, RoleOutcome, StageResult, Workflow,
                                    workflow_roles)

NAME = "math"
PROMPT_STYLES = chat.PROMPT_STYLES
_NUMBER = re.compile(r"-?([0-9]+(\.[0-9]*)?|\.[0-9]+)")
_MAX_DIGITS = 32  # longer numbers do not parse
_MAX_SHOWN = 16  # longer expressions are shown as `?`
_ARITHMETIC = frozenset("0123456789.+-*/%() ")
_NAMES = ("Ann", "Bo", "Cy", "Dee", "Eve", "Fay", "Gus", "Hal", "Ida", "Jo")
_ITEMS = ("nuts", "pens", "eggs", "cards", "balls", "cups")
_ROLE_TEXT = {
    "agent": "You are an agent solving a math word problem alone.",
    "tool": ("You are the tool agent of a two-agent team solving a math word problem. You write "
             "one arithmetic expression whose value answers the question; a calculator computes "
             "it and the reasoner agent sees the result."),
    "reasoner": ("You are the reasoner agent of a two-agent team solving a math word problem. "
                 "The tool agent writes arithmetic that a calculator computes; you see the "
                 "results of earlier turns and give the answer."),
}
_RULES = {
    "agent": "Answer the question with a number.",
    "tool": ("The expression may use numbers, + - * / % and parentheses, nothing else. The "
             "episode ends when the reasoner's answer equals your expression's value."),
    "reasoner": ("Answer the question with a number. The episode ends when your answer equals "
                 "the value of the tool agent's expression of the same turn."),
}
_FORMATS = {"agent": "the number, e.g. <answer>12</answer>",
            "tool": "the expression, e.g. <answer>3*4-2</answer>",
            "reasoner": "the number, e.g. <answer>12</answer>"}
# The sequential (MARFT) workflows: their roles, one per stage, and their chat texts.
SEQUENTIAL_ROLES = {"dual": ("reasoner", "actor"), "trio": ("reasoner", "actor", "verifier")}
KINDS = ("single", "mas", *SEQUENTIAL_ROLES, discussion.KIND)
_MARKERS = {"reasoner": "P", "actor": "A", "verifier": "V"}
_VERDICTS = {"compact": {"y": True, "n": False}, "chat": {"yes": True, "no": False}}
_TEAMS = {"dual": "a two-agent team (a Reasoner, then an Actor)",
          "trio": "a three-agent team (a Reasoner, then an Actor, then a Verifier)"}
_SEQUENTIAL_ROLE_TEXT = {
    "reasoner": ("You are the Reasoner of {team} solving a math word problem. Analyse the "
                 "problem and tell the Actor which arithmetic to perform, as one arithmetic "
                 "expression, without computing it."),
    "actor": ("You are the Actor of {team} solving a math word problem. Follow the Reasoner's "
              "guidance: compute the arithmetic it proposes and give the final number."),
    "verifier": ("You are the Verifier of {team} solving a math word problem. Check the "
                 "Actor's result and say whether it answers the question correctly."),
}
_SEQUENTIAL_RULES = {
    "reasoner": ("The expression may use numbers, + - * / % and parentheses, nothing else; do "
                 "not compute its value, the Actor does. The episode ends when the Actor's "
                 "answer is correct."),
    "actor": "Answer the question with a number. The episode ends when your answer is correct.",
    "verifier": "Answer yes if the Actor's answer of this turn is correct, no otherwise.",
}
_SEQUENTIAL_FORMATS = {"reasoner": "the expression, e.g. <answer>3*4-2</answer>",
                       "actor": "the number, e.g. <answer>12</answer>",
                       "verifier": "yes or no, e.g. <answer>yes</answer>"}


def default_config() -> dict:
  return {"min_steps": 2, "max_steps": 3, "max_number": 9, "max_turns": 3}


# Templates: (operations, question, expression); the numbers `a..d` are drawn from
# 2..max_number, and `e` = `a*b`. A draw is kept only if the answer is an integer >= 0.
_TEMPLATES = (
    (2, "{n} has {a} bags of {b} {i} and loses {c}. Left?", "{a}*{b}-{c}"),
    (2, "{n} has {a} {i}, buys {b}, loses {c}. Left?", "{a}+{b}-{c}"),
    (2, "{n} buys {a} packs of {b} {i} and {c} more. Total?", "{a}*{b}+{c}"),
    (2, "{n} pays {c}0 for {a} {i} at {b} each. Change?", "{c}0-{a}*{b}"),
    (2, "{n} splits {e} {i} into {a} piles, adds {c} to each. Each?", "{e}/{a}+{c}"),
    (3, "{n} has {a} bags of {b} {i}, loses {c}, buys {d}. Now?", "{a}*{b}-{c}+{d}"),
    (3, "{n} has {a} bags of {b} {i} and {c} bags of {d}. Total?", "{a}*{b}+{c}*{d}"),
    (3, "{n} has {a} {i}, buys {b}, loses {c}, buys {d}. Now?", "{a}+{b}-{c}+{d}"),
)


def generate_task(seed: int, split: str, cfg: dict) -> dict:
  """A template word problem of `split`, deterministic in `(seed, split, cfg)`."""
  if split not in ("train", "test"):
    raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
  rng = random.Random(f"{NAME}/{split}/{seed}")
  templates = [t for t in _TEMPLATES if cfg["min_steps"] <= t[0] <= cfg["max_steps"]]
  if not templates:
    raise ValueError(f"no template has {cfg['min_steps']}..{cfg['max_steps']} steps")
  while True:
    _, question, expression = rng.choice(templates)
    a, b, c, d = (rng.randint(2, cfg["max_number"]) for _ in range(4))
    values = dict(a=a, b=b, c=c, d=d, e=a * b, n=rng.choice(_NAMES), i=rng.choice(_ITEMS))
    question, expression = question.format(**values), expression.format(**values)
    answer = evaluate(expression)
    if answer >= 0 and float(answer).is_integer() and split_of(question) == split:
      return {"question": question, "answer": int(answer), "expression": expression}


def parse_number(text: str) -> Number | None:
  """The number an answer states (see the module doc), or None if it states none (or is not
  text)."""
  if not isinstance(text, str):
    return None
  text = text.rsplit("####", 1)[-1].strip().replace(",", "")
  if len(text) > _MAX_DIGITS or not _NUMBER.fullmatch(text):
    return None
  return float(text) if "." in text else int(text)


def chat_value(text: str | None) -> Number | None:
  """The number a free-form chat answer states (`math_verify.parse`: LaTeX, fractions,
  `\\boxed{}`, units), or None when it states none."""
  if text is None:
    return None
  for item in math_verify.parse(text):
    try:
      value = complex(item)
    except (TypeError, ValueError):
      continue
    if value.imag == 0:
      return int(value.real) if float(value.real).is_integer() else value.real
  return None


def chat_correct(text: str | None, answer: Number) -> bool:
  """Whether a free-form chat answer equals `answer` (`math_verify.verify`)."""
  if text is None:
    return False
  return bool(math_verify.verify(math_verify.parse(format_number(answer)),
                                 math_verify.parse(text)))


def format_number(x: Number) -> str:
  """`12`, `2.5`, `1.23457e+15`: integral values under 10**12 without a decimal point, else
  six significant digits."""
  return str(int(x)) if float(x).is_integer() and abs(x) < 10**12 else format(x, ".6g")


def same_number(x: Number, y: Number) -> bool:
  return abs(x - y) <= 1e-6 * max(1.0, abs(y))


def load_jsonl(path: str) -> list[dict]:
  """GSM8K/MATH-style JSONL (`question`, `answer` per line) as task dicts.

  The final answer is the number after the last `####` (GSM8K), else inside the last
  `\\boxed{...}`, else the whole `answer` field. Lines whose final answer is not a number are
  skipped (the workflows compare numbers). The expert expression is the answer itself.
  """
  tasks = []
  with open(path) as f:
    for line in f:
      if not line.strip():
        continue
      row = json.loads(line)
      answer = str(row["answer"])
      if "####" not in answer and "\\boxed{" in answer:
        answer = answer.rsplit("\\boxed{", 1)[1].split("}", 1)[0]
      value = parse_number(answer.replace("$", ""))
      if value is not None:
        tasks.append({"question": row["question"], "answer": value,
                      "expression": format_number(value)})
  return tasks


class MathWorkflow(Workflow):
  """One math episode (see the module docstring)."""

  def __init__(self, task: dict, kind: str, max_turns: int, prompt_style: str = "compact"):
    super().__init__(task, max_turns, chat.check_prompt_style(prompt_style))
    self.roles = workflow_roles(kind, ("tool", "reasoner"))
    self.kind = kind
    self.history: list[tuple[str, str, str]] = []  # (expression, value, answer) shown, per turn
    self.answer: Number | None = None  # the latest answer of the agent / reasoner
    self.correct = False  # whether that answer is the task's
    self.agreed = False

  def stages(self) -> tuple[tuple[str, ...], ...]:
    return (self.roles,)

  @property
  def success(self) -> bool:
    return self.correct and (self.agreed or self.kind == "single" or
                                self.turn >= self.max_turns)

  @property
  def failed(self) -> bool:
    return not self.correct and (self.agreed or (self.kind == "single" and self.turn > 0))

  def final_answer(self) -> str | None:
    """The latest answer of the agent (reasoner); None: none parsed."""
    return None if self.answer is None else format_number(self.answer)

  def prompt(self, role: str) -> list[Message]:
    if self.prompt_style == "chat":
      return self._chat_prompt(role)
    marker = {"agent": "", "tool": "T ", "reasoner": "R "}[role]
    history = "".join(f" T{e}={v} R{a}" for e, v, a in self.history)
    return [{"role": "user", "content": f"{marker}{self.task['question']}{history}"}]

  def _chat_prompt(self, role: str) -> list[Message]:
    rules = f"{_RULES[role]} The episode lasts at most {self.max_turns} turns."
    system = chat.system_prompt(_ROLE_TEXT[role], rules, _FORMATS[role])
    lines = [chat.turn_words(self.turn, self.max_turns), f"Question: {self.task['question']}"]
    for turn, (expression, value, answer) in enumerate(self.history):
      computed = ("the calculator could not compute it" if value == "err" else
                  f"the calculator computed {value}")
      answered = "gave no valid answer" if answer == "?" else f"answered {answer}"
      lines.append(f"Turn {turn + 1}: the tool agent wrote {expression} ({computed}); the "
                   f"reasoner {answered}.")
    return chat.chat_messages(system, "\n\n".join(lines))

  def act(self, responses: dict[str, str]) -> StageResult:
    answer_role = "agent" if self.kind == "single" else "reasoner"
    if self.prompt_style == "chat":
      text = chat.extract_answer(responses.get(answer_role, ""))
      self.answer = chat_value(text)
      self.correct = chat_correct(text, self.task["answer"])
    else:
      self.answer = parse_number(responses.get(answer_role, ""))
      self.correct = self.answer is not None and same_number(self.answer, self.task["answer"])
    correct = float(self.correct)
    outcomes = {}
    if self.kind == "mas":
      expression = (chat.answer_of(responses.get("tool", ""), self.prompt_style) or "").strip()
      if self.prompt_style == "chat":
        expression = expression.split("=", 1)[0].strip()
      value = evaluate(expression)
      if isinstance(value, EvalError):
        outcomes["tool"] = RoleOutcome(-1.0, True)
        shown = "err"
      else:
        outcomes["tool"] = RoleOutcome(float(same_number(value, self.task["answer"])))
        shown = format_number(value)
        self.agreed = self.answer is not None and same_number(self.answer, value)
      answer = "?" if self.answer is None else format_number(self.answer)
      self.history.append((_shown_expression(expression), shown, answer))
    outcomes[answer_role] = RoleOutcome(correct, self.answer is None)
    self.advance()
    return StageResult(outcomes, team_reward=correct)

  def expert_response(self, role: str) -> str:
    return self.task["expression"] if role == "tool" else format_number(self.task["answer"])


def _shown_expression(expression: str) -> str:
  """An expression as shown to the agents: itself if it is short arithmetic text, else `?`."""
  if 0 < len(expression) <= _MAX_SHOWN and set(expression) <= _ARITHMETIC:
    return expression
  return "?"


class SequentialMathWorkflow(Workflow):
  """One episode of a MARFT sequential workflow, `dual` or `trio` (see the module docstring):
  one role per stage, each seeing this step's earlier outputs."""

  def __init__(self, task: dict, kind: str, max_turns: int, prompt_style: str = "compact"):
    if kind not in SEQUENTIAL_ROLES:
      raise ValueError(f"unknown sequential workflow kind {kind!r}; choose from "
                       f"{tuple(SEQUENTIAL_ROLES)}")
    super().__init__(task, max_turns, chat.check_prompt_style(prompt_style))
    self.kind = kind
    self.roles = SEQUENTIAL_ROLES[kind]
    # finished steps, as shown: (expression, answer, verdict, whether the answer was correct)
    self.history: list[tuple[str, str, bool | None, bool]] = []
    self.expression = "?"  # this step's reasoner expression, as shown
    self.answer: Number | None = None  # this step's actor answer
    self.correct = False  # whether that answer is the task's
    self.verdict: bool | None = None  # this step's verifier verdict (None: neither yes nor no)
    self.solved = False  # whether a finished step's answer was correct

  def stages(self) -> tuple[tuple[str, ...], ...]:
    return tuple((role,) for role in self.roles)

  @property
  def success(self) -> bool:
    return self.solved

  def _shown_answer(self) -> str:
    return "?" if self.answer is None else format_number(self.answer)

  def final_answer(self) -> str | None:
    """The actor's answer of the last finished step (None: none parsed)."""
    if not self.history or self.history[-1][1] == "?":
      return None
    return self.history[-1][1]

  def prompt(self, role: str) -> list[Message]:
    if self.prompt_style == "chat":
      return self._chat_prompt(role)
    history = "".join(self._compact_step(*step) for step in self.history)
    current = self._compact_step(self.expression, self._shown_answer(), None, None,
                                 self.roles.index(role))
    return [{"role": "user",
             "content": f"{_MARKERS[role]} {self.task['question']}{history}{current}"}]

  def _compact_step(self, expression: str, answer: str, verdict: bool | None,
                    correct: bool | None, upto: int | None = None) -> str:
    """` P<expression> A<answer>[ V<y|n>] x`: a finished step (`upto=None`, judged), or the
    outputs of this step's first `upto` roles."""
    items = [f" P{expression}", f" A{answer}"]
    if self.kind == "trio":
      items.append(" V" + {True: "y", False: "n", None: "?"}[verdict])
    if upto is not None:
      return "".join(items[:upto])
    return "".join(items) + (" c" if correct else " x")

  def _chat_prompt(self, role: str) -> list[Message]:
    rules = f"{_SEQUENTIAL_RULES[role]} The episode lasts at most {self.max_turns} turns."
    system = chat.system_prompt(_SEQUENTIAL_ROLE_TEXT[role].format(team=_TEAMS[self.kind]),
                                rules, _SEQUENTIAL_FORMATS[role])
    lines = [chat.turn_words(self.turn, self.max_turns), f"Question: {self.task['question']}"]
    for turn, (expression, answer, verdict, correct) in enumerate(self.history):
      judged = "correct" if correct else "incorrect"
      lines.append(f"Turn {turn + 1}: {self._chat_step(expression, answer, verdict)}. The "
                   f"judge found the answer {judged}.")
    upto = self.roles.index(role)
    if upto:
      current = self._chat_step(self.expression, self._shown_answer(), None, upto)
      lines.append(f"This turn: {current}.")
    return chat.chat_messages(system, "\n\n".join(lines))

  def _chat_step(self, expression: str, answer: str, verdict: bool | None,
                 upto: int | None = None) -> str:
    """A step's outputs in words (the first `upto` roles' where given)."""
    items = ["the Reasoner gave no usable expression" if expression == "?" else
             f"the Reasoner proposed {expression}",
             "the Actor gave no valid answer" if answer == "?" else f"the Actor answered {answer}"]
    if self.kind == "trio":
      items.append({True: "the Verifier said yes", False: "the Verifier said no",
                    None: "the Verifier gave no valid verdict"}[verdict])
    return "; ".join(items[:upto])

  def act(self, responses: dict[str, str]) -> StageResult:
    (role,) = self.acting_roles()
    text = chat.answer_of(responses.get(role, ""), self.prompt_style)
    if role == "reasoner":
      expression = (text or "").strip()
      if self.prompt_style == "chat":
        expression = expression.split("=", 1)[0].strip()
      value = evaluate(expression)
      self.expression = _shown_expression(expression)
      outcome = (RoleOutcome(0.0, True) if isinstance(value, EvalError) else
                 RoleOutcome(float(same_number(value, self.task["answer"]))))
    elif role == "actor":
      if self.prompt_style == "chat":
        self.answer = chat_value(text)
        self.correct = chat_correct(text, self.task["answer"])
      else:
        self.answer = parse_number(text)
        self.correct = self.answer is not None and same_number(self.answer, self.task["answer"])
      outcome = RoleOutcome(float(self.correct), self.answer is None)
    else:
      verdict = (text or "").strip()
      self.verdict = _VERDICTS[self.prompt_style].get(
          verdict.lower() if self.prompt_style == "chat" else verdict)
      outcome = RoleOutcome(float(self.verdict == self.correct), self.verdict is None)
    team_reward = 0.0
    if self.stage == len(self.stages()) - 1:  # the step is over: judge it
      team_reward = float(self.correct)
      self.history.append((self.expression, self._shown_answer(), self.verdict, self.correct))
      self.solved = self.correct
      self.expression, self.answer, self.correct, self.verdict = "?", None, False, None
    self.advance()
    return StageResult({role: outcome}, team_reward=team_reward)

  def expert_response(self, role: str) -> str:
    if role == "reasoner":
      return self.task["expression"]
    if role == "actor":
      return format_number(self.task["answer"])
    return ("yes" if self.correct else "no") if self.prompt_style == "chat" else (
        "y" if self.correct else "n")


def grade(response: str, style: str, answer: Number) -> tuple[str | None, bool]:
  """A response's answer as shown to other agents (None: it states no number) and whether it
  is `answer`: compact `parse_number`, chat `<answer>` graded by `math-verify`."""
  if style == "chat":
    text = chat.extract_answer(response)
    value = chat_value(text)
    return (None if value is None else format_number(value)), chat_correct(text, answer)
  value = parse_number(response)
  if value is None:
    return None, False
  return format_number(value), same_number(value, answer)


def discussion_checker(task: dict) -> discussion.Checker:
  """The math task's side of a MAPoRL discussion."""
  return discussion.Checker(grade=lambda response, style: grade(response, style, task["answer"]),
                            question=task["question"], expert=format_number(task["answer"]))


def make_workflow(task: dict, kind: str, cfg: dict, max_turns: int,
                  prompt_style: str = "compact") -> Workflow:
  """A `MathWorkflow` (single, mas), a `SequentialMathWorkflow` (dual, trio) or a
  `discussion.DiscussionWorkflow` (discussion, `cfg["agents"]` agents, default 2)."""
  if kind == discussion.KIND:
    return discussion.DiscussionWorkflow(task, discussion_checker(task), max_turns,
                                         cfg.get("agents", 2), prompt_style)
  if isinstance(kind, str) and kind in SEQUENTIAL_ROLES:
    return SequentialMathWorkflow(task, kind, max_turns, prompt_style)
  if kind not in KINDS:
    raise ValueError(f"unknown workflow kind {kind!r}; choose from {KINDS}")
  return MathWorkflow(task, kind, max_turns, prompt_style)
