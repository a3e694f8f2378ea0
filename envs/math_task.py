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
"""
from __future__ import annotations

import json
import random
import re

import math_verify

from envs import chat
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
  """The number an answer states (see the module doc), or None if it states none."""
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


def make_workflow(task: dict, kind: str, cfg: dict, max_turns: int,
                  prompt_style: str = "compact") -> MathWorkflow:
  return MathWorkflow(task, kind, max_turns, prompt_style)
