"""Fuzzes the code tasks (synthetic `code`, HumanEval): test and code parsing, and whole
episodes. The sandbox is replaced by a stub whose output is fuzzed too (the marker lines the
harness prints, with any verdict or value, any failure reason), so thousands of episodes run
in seconds and the parsing of what a candidate printed is fuzzed with the responses."""
import functools
import re

import pytest
from hypothesis import example
from hypothesis import strategies as st

from envs import chat, code, humaneval, sandbox
from tests.fuzz.drive import drive
from tests.fuzz.strategies import anything, fuzz, texts

CODE_CFG = code.default_config()
HE_CFG = humaneval.default_config()
_MARKER = re.compile(r"'(@[0-9a-f]{16})'")
PRINTED = ("1", "-3", "'ab'", "True", "2.5", "inf", "nan", "1e999", "[1]", "?", "!", "E", "",
           "ok", "fail AssertionError", "fail got 3", "fail ", "H", "0", "1 ok", "\x00", "é")
REASONS = ("ok", "timeout", "memory", "forbidden", "error", "output_limit")
# What the stubbed sandbox prints: (part, text) marker lines, a failure reason, stderr.
outputs = st.tuples(
    st.lists(st.tuples(st.one_of(st.sampled_from(["E", "H", "0", "1", "2", "-1", "x"]),
                                 st.integers(0, 9).map(str)),
                       st.one_of(st.sampled_from(PRINTED), st.text(max_size=10))), max_size=8),
    st.sampled_from(REASONS), st.text(max_size=30))
STUB = {"output": ([], "ok", "")}


def fake_run_python(source: str, **kwargs) -> sandbox.SandboxResult:
  lines, reason, stderr = STUB["output"]
  marker = _MARKER.search(source).group(1)
  stdout = "\n".join(f"{marker} {part} {text}" for part, text in lines)
  return sandbox.SandboxResult(reason == "ok", reason, stdout, stderr, 0 if reason == "ok" else 1)


@pytest.fixture(autouse=True, scope="module")
def stub_sandbox():
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(sandbox, "run_python", fake_run_python)
    yield
  # results of the stub must not answer later callers of the caches
  code.run_candidate.cache_clear()
  humaneval.run_program.cache_clear()


@functools.cache
def code_task(seed: int, spec: str) -> dict:
  return code.generate_task(seed, "train", {**CODE_CFG, "families": list(code.FAMILIES),
                                            "spec": spec})


@functools.cache
def humaneval_task(seed: int) -> dict:
  return humaneval.generate_task(seed, "test", HE_CFG)


@fuzz(anything, st.sampled_from(code.FAMILIES), st.integers(-2, 10), examples=10, slow=3000)
@example(None, "affine", 4)
@example("f([1])==2;f({1: 2})==3;f(" + "[" * 100 + ")==1", "affine", 4)
@example("f(1)==2;f(2)==3", "affine", -1)
def test_parse_tests(text, family, max_tests):
  tests = code.parse_tests(text, family, max_tests)
  assert 0 <= len(tests.valid) <= tests.items <= max(max_tests, 0)
  assert tests.items == 0 or isinstance(text, str)
  for args, _ in tests.valid:
    hash(args)  # the sandbox calls are cached on them


@fuzz(anything, st.integers(0, 163), st.integers(-2, 10), examples=10, slow=3000)
@example(None, 0, 8)
@example(False, 0, 8)
@example("assert " + "(" * 200 + ")", 0, 8)
@example("\x00", 0, 8)
@example("0\n0", 0, -1)
def test_humaneval_reading(text, seed, max_tests):
  task = humaneval_task(seed)
  program = humaneval.read_code(text, task, HE_CFG["max_code_chars"])
  assert (program.source is None) == bool(program.error)
  tests = humaneval.parse_tests(text, task["entry_point"], max_tests)
  assert len(tests) <= max(max_tests, 0)


@fuzz(st.integers(0, 5), st.sampled_from(["formula", "examples"]),
      st.sampled_from(["single", "mas"]), st.sampled_from(chat.PROMPT_STYLES),
      st.lists(anything, min_size=1, max_size=6), outputs, examples=15, slow=600)
@example(0, "formula", "mas", "compact", [None, 3, "f(1)==2"], ([], "ok", ""))
def test_code_episode(seed, spec, kind, style, responses, output):
  STUB["output"] = output
  wf = code.make_workflow(code_task(seed, spec), kind, CODE_CFG, CODE_CFG["max_turns"], style)
  drive(wf, responses, CODE_CFG["max_turns"])


@fuzz(st.integers(0, 163), st.sampled_from(["single", "mas"]),
      st.lists(st.one_of(anything, texts.map(lambda t: f"<answer>{t}</answer>")), min_size=1,
               max_size=6), outputs, examples=15, slow=600)
@example(0, "mas", [None, "<answer>assert has_close_elements([], 1) == False</answer>"],
         ([("E", "NameError")], "ok", ""))
def test_humaneval_episode(seed, kind, responses, output):
  STUB["output"] = output
  wf = humaneval.make_workflow(humaneval_task(seed), kind, HE_CFG, HE_CFG["max_turns"], "chat")
  drive(wf, responses, HE_CFG["max_turns"])
