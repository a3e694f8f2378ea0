"""Code: write a tiny Python function `f` from a short spec; hidden tests decide success.

The "code" row of the AT-GRPO paper's task table ("Stronger Together") at this codebase's
tiny scale. An instance is one function from a family
- affine  `f(x)=3x+1`          -> `3*x+1`               (a in -3..3 but 0, b in -9..9)
- maxmin  `f(a,b)=2max(a,b)-1` -> `2*max(a,b)-1`        (max or min, k in {1, 2, -1}, c in -9..9)
- cond    `f(x)=x>1?2x:-3`     -> `2*x if x>1 else -3`  (t in -3..3, u in {1, -1, 2}, c in -9..9)
- str     `f(s)=rev(s)+'a'`    -> `s[::-1]+'a'`         (8 string operations, 8 suffixes)
(default: the first three) with `hidden_tests` ground-truth tests (cond always tests both
sides of its threshold; a cond equal to another one is left out). The spec is the formula (`spec="formula"`) or a few
input/output examples (`spec="examples"`, e.g. `f(0)=1 f(1)=4`). Train and test instances are
different functions (split by a hash of the family and parameters).

Actions. Code: the body expression of `f` (`3*x+1`), or a whole `def f(...)` source. Tests:
items `f(2)==7` (or `f(2)=7`) separated by `;` or newlines; the first `max_tests` items count.
Unparseable code or tests are failing candidates (reward 0, marked invalid), never errors.
Model-written code runs only through `envs.sandbox.run_python`: one sandbox call per
candidate runs it on the hidden inputs and the tester's inputs and prints one result line per
input; the comparison with the expected values happens here.

Workflows (one stage per turn, the state re-rendered every turn):
- "mas": coder and tester act in parallel and both see the latest code and tests with the
  code's result on each test. Prompts (role marker C / T):
    `C f(x)=3x+1` / `c:3*x+2` / `t:f(0)==1 got 2;f(1)==4 got 5`
  The episode ends when the code passes the hidden tests (success), when it passes all of the
  tester's (at least one) valid tests without passing the hidden ones (failed), or at the limit.
- "single": the agent writes the code; it sees the spec and its latest code (`c:...`); it ends
  on success or at the limit.

Chat prompts (`envs.chat`): a system message with the role, the notation of the spec, the
rules and the answer format (the code or the tests inside `<answer>...</answer>`, a ```python
fence allowed), then the turn, the spec, the latest code in a fence and each of the tester's
tests with the code's result in words.

Rewards (spec, "Turn rewards in the reference"): coder/agent local = pass ratio of its code
on the hidden tests; tester local = pass ratio of the reference solution on the tester's test
items (unparseable items count as failing); team = the coder's/agent's hidden pass ratio.
The spec gives the code task no invalid or failure penalty, so both are 0.
"""
from __future__ import annotations

import ast
import dataclasses
import enum
import functools
import json
import random
import re
import secrets
from collections.abc import Callable
from typing import Any

from envs import chat, sandbox
from envs.arithmetic_eval import parse_expression
from envs.splits import split_of
from marft.rollout.workflow import (Message, RoleOutcome, StageResult, Workflow,
                                    workflow_class)

NAME = "code"
PROMPT_STYLES = chat.PROMPT_STYLES
FAMILIES = ("affine", "maxmin", "cond", "str")
MAX_TEST_CHARS = 64  # longer test items are unparseable
_SHOWN_CODE_CHARS = 40
_SHOWN_VALUE_CHARS = 8
_INT_RANGE = range(-9, 10)
_STR_OPS: dict[str, tuple[str, Callable[[str], str]]] = {
    "rev": ("s[::-1]", lambda s: s[::-1]),
    "twice": ("s+s", lambda s: s + s),
    "up": ("s.upper()", str.upper),
    "first": ("s[0]", lambda s: s[0]),
    "last": ("s[-1]", lambda s: s[-1]),
    "tail": ("s[1:]", lambda s: s[1:]),
    "init": ("s[:-1]", lambda s: s[:-1]),
    "sort": ("''.join(sorted(s))", lambda s: "".join(sorted(s))),
}
_STR_SUFFIXES = ("", "a", "b", "c", "x", "y", "z", "!")
_ROLE_TEXT = {
    "agent": "You are a programmer writing a small Python function alone.",
    "coder": ("You are the coder of a two-agent team writing a small Python function. The "
              "tester writes tests; you see how your latest code did on them."),
    "tester": ("You are the tester of a two-agent team writing a small Python function. The "
               "coder writes the code; you write tests that a correct function passes, and see "
               "how the coder's latest code did on them."),
}
_SPEC_NOTATION = (
    "The spec is a formula or input/output examples. In formulas `2x` is 2*x, `c?a:b` is "
    "`a if c else b`, and on a string s: rev(s) reverses it, twice(s) is s+s, up(s) upper-cases "
    "it, first(s) and last(s) are its first and last characters, tail(s) drops the first, "
    "init(s) the last, sort(s) sorts its characters.")


def default_config() -> dict:
  """Tiny-scale defaults."""
  return {
      "families": ["affine", "maxmin", "cond"],
      "spec": "formula",  # or "examples"
      "hidden_tests": 5,
      "max_tests": 4,  # tester items that count
      "max_code_chars": 120,  # longer code is an invalid (failing) candidate
      "timeout_s": 1.0,  # per sandbox call
      "memory_mb": 256,
      "max_turns": 3,
  }


# ---------------------------------------------------------------- functions and instances


def reference(family: str, params: list, args: tuple) -> Any:
  """The ground-truth value of `f(*args)` (trusted code; `args` must fit the signature)."""
  if family == "affine":
    a, b = params
    return a * args[0] + b
  if family == "maxmin":
    op, k, c = params
    return k * (max if op == "max" else min)(*args) + c
  if family == "cond":
    t, u, c = params
    return u * args[0] if args[0] > t else c
  op, suffix = params
  return _STR_OPS[op][1](args[0]) + suffix


def _arg_names(family: str) -> tuple[str, ...]:
  return {"affine": ("x",), "maxmin": ("a", "b"), "cond": ("x",), "str": ("s",)}[family]


def _fits(family: str, args: tuple) -> bool:
  """Whether `args` is a legal input of the family's `f`: arity, exact types, strings non-empty."""
  if len(args) != len(_arg_names(family)):
    return False
  if family == "str":
    return type(args[0]) is str and args[0] != ""
  return all(type(a) is int for a in args)


def _scaled(k: int, inner: str, times: str) -> str:
  """`k` times `inner` as text: `inner`, `-inner` or `k<times>inner`."""
  return inner if k == 1 else "-" + inner if k == -1 else f"{k}{times}{inner}"


def _plus(c: int) -> str:
  return "" if c == 0 else f"+{c}" if c > 0 else str(c)


def _formula_and_code(family: str, params: list) -> tuple[str, str]:
  if family == "affine":
    a, b = params
    return f"f(x)={_scaled(a, 'x', '')}{_plus(b)}", f"{_scaled(a, 'x', '*')}{_plus(b)}"
  if family == "maxmin":
    op, k, c = params
    inner = f"{op}(a,b)"
    return f"f(a,b)={_scaled(k, inner, '')}{_plus(c)}", f"{_scaled(k, inner, '*')}{_plus(c)}"
  if family == "cond":
    t, u, c = params
    return (f"f(x)=x>{t}?{_scaled(u, 'x', '')}:{c}",
            f"{_scaled(u, 'x', '*')} if x>{t} else {c}")
  op, suffix = params
  tail = f"+{suffix!r}" if suffix else ""
  return f"f(s)={op}(s){tail}", f"{_STR_OPS[op][0]}{tail}"


@functools.cache
def family_params(family: str) -> tuple[tuple, ...]:
  """Every parameter tuple of the family, one per distinct function (a cond with c == u*t
  equals the one with threshold t-1, so only that one is kept)."""
  if family == "affine":
    return tuple((a, b) for a in (-3, -2, -1, 1, 2, 3) for b in range(-9, 10))
  if family == "maxmin":
    return tuple((op, k, c) for op in ("max", "min") for k in (1, 2, -1) for c in range(-9, 10))
  if family == "cond":
    return tuple((t, u, c) for t in range(-3, 4) for u in (1, -1, 2) for c in range(-9, 10)
                 if c != u * t)
  return tuple((op, suffix) for op in _STR_OPS for suffix in _STR_SUFFIXES)


def _random_input(family: str, rng: random.Random) -> tuple:
  if family == "str":
    return ("".join(rng.choice("abcdxyz") for _ in range(rng.randint(1, 4))),)
  return tuple(rng.choice(_INT_RANGE) for _ in _arg_names(family))


def _probe(family: str, params: list, rng: random.Random) -> list[tuple]:
  """Inputs on which no other function of the family agrees with this one (the examples of
  the spec, the expert's tests); the last draw if 100 draws find none."""
  for _ in range(100):
    if family == "affine":
      probe = [(x,) for x in sorted(rng.sample(range(-5, 6), 2))]
    elif family == "maxmin":
      p, q = sorted(rng.sample(range(-5, 6), 2))
      r, s = sorted(rng.sample(range(-5, 6), 2))
      probe = [(p, q), (s, r)]
    elif family == "cond":
      t = params[0]
      probe = [(t,), (t + 1,), (t + rng.randint(2, 4),)]
    else:
      probe = [_random_input(family, rng), _random_input(family, rng)]
    outputs = [reference(family, params, x) for x in probe]
    if sum(all(reference(family, list(other), x) == y for x, y in zip(probe, outputs))
           for other in family_params(family)) == 1:
      break
  return probe


def _hidden_inputs(family: str, params: list, count: int, rng: random.Random) -> list[tuple]:
  """`count` distinct inputs; for cond the two sides of the threshold, for maxmin a<b and a>b."""
  if family == "cond":
    inputs = [(params[0],), (params[0] + 1,)][:count]
  elif family == "maxmin":
    inputs = [(-1, 2), (3, -4)][:count]
  else:
    inputs = []
  while len(inputs) < count:
    x = _random_input(family, rng)
    if x not in inputs:
      inputs.append(x)
  rng.shuffle(inputs)
  return inputs


def _render_call(args: tuple | list) -> str:
  return "f(" + ",".join(repr(a) for a in args) + ")"


def function_split(family: str, params: list) -> str:
  """The split of a function: by its canonical `[family, params]` string."""
  return split_of(json.dumps([family, params]))


@functools.cache
def _pool(family: str, split: str) -> tuple[tuple, ...]:
  return tuple(p for p in family_params(family) if function_split(family, list(p)) == split)


def generate_task(seed: int, split: str, cfg: dict) -> dict:
  """One instance of `split` ("train" / "test"), deterministic in (seed, split, cfg)."""
  cfg = {**default_config(), **cfg}
  if split not in ("train", "test"):
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")
  unknown = set(cfg["families"]) - set(FAMILIES)
  if unknown or not cfg["families"]:
    raise ValueError(f"families must be a non-empty subset of {FAMILIES}, got {cfg['families']}")
  if cfg["spec"] not in ("formula", "examples"):
    raise ValueError(f"spec must be 'formula' or 'examples', got {cfg['spec']!r}")
  rng = random.Random(f"code/{split}/{seed}")
  families = [f for f in sorted(set(cfg["families"])) if _pool(f, split)]
  if not families:
    raise ValueError(f"no {split} instance in families {cfg['families']}")
  family = rng.choice(families)
  params = list(rng.choice(_pool(family, split)))
  formula, solution = _formula_and_code(family, params)
  probe = _probe(family, params, rng)
  hidden = _hidden_inputs(family, params, cfg["hidden_tests"], rng)
  if cfg["spec"] == "examples":
    spec = " ".join(f"{_render_call(x)}={reference(family, params, x)!r}" for x in probe)
  else:
    spec = formula
  return {"family": family, "params": params, "args": list(_arg_names(family)), "spec": spec,
          "solution": solution, "probe": [list(x) for x in probe],
          "hidden": [[list(x), reference(family, params, x)] for x in hidden]}


# ---------------------------------------------------------------- parsing and execution


@dataclasses.dataclass(frozen=True)
class Tests:
  """A tester's answer: how many items counted, and the parseable ones as (args, expected)."""

  items: int
  valid: tuple[tuple[tuple, Any], ...]


def parse_tests(text: str, family: str, max_tests: int) -> Tests:
  """Parses `f(2)==7;f(3)==10` items; an item that is not a literal call of the family's
  signature compared with a literal counts but is not valid; an answer that is not text holds
  none."""
  if not isinstance(text, str):
    return Tests(0, ())
  items = [item.strip() for item in re.split(r"[;\n]", text) if item.strip()]
  items = items[:max(max_tests, 0)]
  valid = []
  for item in items:
    test = _parse_test(item)
    if test is not None and _fits(family, test[0]):
      valid.append(test)
  return Tests(items=len(items), valid=tuple(valid))


def _parse_test(item: str) -> tuple[tuple, Any] | None:
  if len(item) > MAX_TEST_CHARS:
    return None
  text = item if "==" in item else item.replace("=", "==", 1)  # `f(2)=7` is accepted too
  try:
    node = parse_expression(text).body
    if (isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq)
        and isinstance(node.left, ast.Call) and isinstance(node.left.func, ast.Name)
        and node.left.func.id == "f" and not node.left.keywords):
      args = tuple(ast.literal_eval(a) for a in node.left.args)
      return args, ast.literal_eval(node.comparators[0])
  except Exception:  # any malformed text is just not a test
    pass
  return None


def candidate_source(code: str, args: list[str]) -> str:
  """The module source of a code answer: a whole `def f` as is, else `f` returning it."""
  code = code.strip()
  if re.match(r"def\s+f\s*\(", code):
    return code + "\n"
  return f"def f({','.join(args)}):\n  return (\n{code}\n)\n"


_HARNESS = """\
import os
M, P = {marker!r}, os.getpid()
try:
  g = {{"__name__": "candidate"}}
  exec(compile({source}, "f.py", "exec"), g)
  f = g["f"]
except BaseException:
  print(M, "E", flush=True)
  raise SystemExit(0)
for i, a in enumerate({inputs!a}):
  try:
    v = f(*a)
    r = repr(v) if type(v) in (int, str, bool, float) else "?"
  except BaseException:
    r = "!"
  if os.getpid() != P:  # a fork of the candidate
    os._exit(0)
  print(M, i, r, flush=True)
"""


class _Fail(enum.Enum):
  FAIL = "FAIL"


FAIL = _Fail.FAIL  # the output of a call that raised, timed out or returned a non-literal


@functools.lru_cache(maxsize=4096)
def run_candidate(source: str, inputs: tuple[tuple, ...], timeout_s: float, memory_mb: int
                  ) -> tuple[Any, ...] | None:
  """Outputs of the candidate module's `f` on each input (FAIL where it did not return a
  plain value), in one sandbox call; None when the module does not define `f`."""
  marker = "@" + secrets.token_hex(8)
  harness = _HARNESS.format(marker=marker, source=ascii(source), inputs=inputs)
  result = sandbox.run_python(harness, timeout_s=timeout_s, memory_mb=memory_mb)
  outputs: dict[int, Any] = {}
  for line in result.stdout.splitlines():
    parts = line.split(" ", 2)
    if parts[0] != marker or len(parts) < 2:
      continue
    if parts[1] == "E":
      return None
    if len(parts) == 3 and parts[1].isdigit():
      outputs[int(parts[1])] = _literal(parts[2])
  return tuple(outputs.get(i, FAIL) for i in range(len(inputs)))


def _literal(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except Exception:  # "!", "?", inf/nan reprs
    return FAIL


def _passes(output: Any, expected: Any) -> bool:
  return output is not FAIL and output == expected


def _printable(text: str, limit: int) -> str:
  text = "".join(c if " " <= c <= "~" else " " if c == "\n" else "?" for c in text[:limit + 1])
  return text if len(text) <= limit else text[:limit - 1] + "~"


# ---------------------------------------------------------------- workflows


class _CodeWorkflow(Workflow):
  """Shared state: the latest code and its outputs; the latest tests."""

  def __init__(self, task: dict, cfg: dict, max_turns: int, prompt_style: str = "compact"):
    super().__init__(task, max_turns, chat.check_prompt_style(prompt_style))
    self.cfg = cfg
    self.family = task["family"]
    self.hidden = [(tuple(x), y) for x, y in task["hidden"]]
    self.code: str | None = None
    self.tests = Tests(0, ())
    self.test_outputs: tuple = ()  # the code's outputs on self.tests.valid
    self.hidden_ratio = 0.0
    self.tests_passed = False

  @property
  def success(self) -> bool:
    return self.hidden_ratio == 1.0

  def _run_code(self, code: str, extra: list[tuple]) -> tuple[bool, tuple]:
    """Runs `code` on the hidden inputs then `extra`; (invalid, outputs)."""
    inputs = [x for x, _ in self.hidden] + extra
    if not code.strip() or len(code) > self.cfg["max_code_chars"]:
      return True, (FAIL,) * len(inputs)
    outputs = run_candidate(candidate_source(code, self.task["args"]), tuple(inputs),
                            float(self.cfg["timeout_s"]), int(self.cfg["memory_mb"]))
    if outputs is None:
      return True, (FAIL,) * len(inputs)
    return False, outputs

  def _score_code(self, code: str, extra: list[tuple]) -> tuple[RoleOutcome, tuple]:
    """Sets the code state; its outcome and the outputs on `extra`."""
    invalid, outputs = self._run_code(code, extra)
    n = len(self.hidden)
    self.code = code
    self.hidden_ratio = sum(_passes(o, y) for o, (_, y) in zip(outputs, self.hidden)) / n
    return RoleOutcome(self.hidden_ratio, invalid), outputs[n:]

  def _code_line(self) -> list[str]:
    return [] if self.code is None else ["c:" + _printable(self.code.strip(), _SHOWN_CODE_CHARS)]

  def _answer(self, responses: dict[str, str], role: str) -> str:
    """What the role's response says: the whole text (compact) or the tagged answer (chat;
    "" without one, which fails as code and holds no test)."""
    return chat.answer_of(responses.get(role, ""), self.prompt_style) or ""

  def _chat_prompt(self, role: str, results: list[str]) -> list[Message]:
    signature = f"f({', '.join(self.task['args'])})"
    if role == "tester":
      rules = (f"{_SPEC_NOTATION} Write up to {self.cfg['max_tests']} tests of {signature}, one "
               "per line, each a call with literal arguments compared with the value a correct "
               "function returns, e.g. `f(2)==7`; you are rewarded for tests that are right.")
      answer_format = "one test per line, e.g. <answer>f(2)==7\nf(0)==1</answer>"
    else:
      rules = (f"{_SPEC_NOTATION} Write {signature} in Python: either the expression it returns "
               "(`3*x+1`) or the whole definition (`def f(x): ...`). Hidden tests decide "
               "whether it is correct.")
      answer_format = "the code, e.g. <answer>3*x+1</answer>"
    lines = [chat.turn_words(self.turn, self.max_turns), f"Spec: {self.task['spec']}"]
    if self.code is not None:
      lines.append(f"The latest code:\n```python\n{self.code.strip()}\n```")
    lines.extend(results)
    return chat.chat_messages(chat.system_prompt(_ROLE_TEXT[role], rules, answer_format),
                              "\n\n".join(lines))

  def expert_response(self, role: str) -> str:
    if role == "tester":
      return ";".join(
          f"{_render_call(x)}=={reference(self.family, self.task['params'], tuple(x))!r}"
          for x in self.task["probe"])
    return self.task["solution"]


class SingleWorkflow(_CodeWorkflow):
  """One agent writes the code."""

  roles = ("agent",)

  def stages(self) -> tuple[tuple[str, ...], ...]:
    return (("agent",),)

  def prompt(self, role: str) -> list[Message]:
    if self.prompt_style == "chat":
      return self._chat_prompt(role, [])
    return [{"role": "user", "content": "\n".join([self.task["spec"], *self._code_line()])}]

  def act(self, responses: dict[str, str]) -> StageResult:
    outcome, _ = self._score_code(self._answer(responses, "agent"), [])
    self.advance()
    return StageResult(outcomes={"agent": outcome}, team_reward=self.hidden_ratio)


class CoderTester:
  """The coder + tester arrangement (a mixin before the workflow base): both act in parallel
  each turn; the episode fails once the code passes all the tester's (at least one) valid tests
  without passing the hidden ones (`tests_passed` and not `success`)."""

  roles = ("coder", "tester")
  tests_passed = False

  def stages(self) -> tuple[tuple[str, ...], ...]:
    return (("coder", "tester"),)

  @property
  def failed(self) -> bool:
    return self.tests_passed and not self.success


class MASWorkflow(CoderTester, _CodeWorkflow):
  """Coder and tester act in parallel each turn (spec table, "code" row)."""

  def prompt(self, role: str) -> list[Message]:
    if self.prompt_style == "chat":
      return self._chat_prompt(role, self._chat_results())
    lines = [("C " if role == "coder" else "T ") + self.task["spec"], *self._code_line()]
    if self.code is not None:
      lines.append("t:" + (";".join(self._test_text(t, o)
                                    for t, o in zip(self.tests.valid, self.test_outputs)) or "-"))
    return [{"role": "user", "content": "\n".join(lines)}]

  def _chat_results(self) -> list[str]:
    """The latest code's result on each of the tester's valid tests, in words."""
    if self.code is None:
      return []
    if not self.tests.valid:
      return ["The tester wrote no valid test."]
    lines = []
    for (args, expected), output in zip(self.tests.valid, self.test_outputs):
      shown = _printable(f"{_render_call(args)}=={expected!r}", MAX_TEST_CHARS)
      got = ("passed" if _passes(output, expected) else "failed: the call raised an error" if
             output is FAIL else f"failed: it returned {_printable(repr(output), 40)}")
      lines.append(f"- {shown} {got}")
    return ["The tester's tests on the latest code:\n" + "\n".join(lines)]

  @staticmethod
  def _test_text(test: tuple[tuple, Any], output: Any) -> str:
    (args, expected) = test
    shown = f"{_render_call(args)}=={expected!r}"
    if _passes(output, expected):
      return _printable(shown, MAX_TEST_CHARS) + " ok"
    got = "err" if output is FAIL else _printable(repr(output), _SHOWN_VALUE_CHARS)
    return _printable(shown, MAX_TEST_CHARS) + " got " + got

  def act(self, responses: dict[str, str]) -> StageResult:
    self.tests = parse_tests(self._answer(responses, "tester"), self.family,
                             self.cfg["max_tests"])
    correct = sum(reference(self.family, self.task["params"], x) == y for x, y in self.tests.valid)
    tester = RoleOutcome(correct / self.tests.items if self.tests.items else 0.0,
                         invalid=not self.tests.valid)
    coder, self.test_outputs = self._score_code(self._answer(responses, "coder"),
                                                [x for x, _ in self.tests.valid])
    self.tests_passed = bool(self.tests.valid) and all(
        _passes(o, y) for o, (_, y) in zip(self.test_outputs, self.tests.valid))
    self.advance()
    return StageResult(outcomes={"coder": coder, "tester": tester},
                       team_reward=self.hidden_ratio)


def make_workflow(task: dict, kind: str, cfg: dict, max_turns: int,
                  prompt_style: str = "compact") -> Workflow:
  """The "single" (agent) or "mas" (coder + tester) workflow of `task`."""
  workflow = workflow_class(kind, SingleWorkflow, MASWorkflow)
  return workflow(task, {**default_config(), **cfg}, max_turns, prompt_style)
