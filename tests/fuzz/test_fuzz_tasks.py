"""Fuzzes the task registry and every task's `make_workflow` arguments (workflow kind, prompt
style, turn limit, unknown config keys)."""
import functools

from hypothesis import example
from hypothesis import strategies as st

from envs import registry
from tests.fuzz.drive import drive
from tests.fuzz.strategies import anything, fuzz, texts

# HumanEval and code run a sandbox on every answer: their workflows are fuzzed in
# test_fuzz_code.py with the sandbox stubbed.
TASKS = ("plan_path", "sokoban", "sudoku", "math", "search_qa")
KINDS = ("single", "mas", "dual", "trio", "discussion")


@functools.cache
def task(name: str) -> dict:
  module = registry.get_task(name)
  return module.generate_task(0, "train", module.default_config())


@fuzz(st.one_of(anything, st.sampled_from(sorted(registry.TASKS))), examples=10, slow=2000)
@example(["math"])
@example({"a": 1})
def test_get_task(name):
  try:
    module = registry.get_task(name)
  except ValueError as e:
    assert "unknown task" in str(e)
  else:
    assert module.NAME == name or name == "math"


@fuzz(st.sampled_from(TASKS), st.one_of(st.sampled_from(KINDS), anything),
      st.one_of(st.sampled_from(["compact", "chat"]), anything), st.integers(-3, 3),
      st.dictionaries(st.text(max_size=5), anything, max_size=2), st.lists(texts, max_size=3),
      examples=10, slow=1000)
@example("math", ["mas"], "compact", 1, {}, [])
@example("sudoku", "mas", ["chat"], 1, {}, [])
@example("plan_path", "single", "compact", 0, {}, [])
@example("math", "discussion", "compact", 0, {}, [])
def test_make_workflow(name, kind, style, max_turns, unknown, responses):
  """Arguments a task does not take (a discussion takes at least one turn) are one ValueError
  naming them; the rest make workflows that end within their turn limit, whatever the unknown
  config keys."""
  module = registry.get_task(name)
  cfg = {**module.default_config(), **unknown}
  try:
    wf = module.make_workflow(task(name), kind, cfg, max_turns, style)
  except ValueError as e:
    assert "kind" in str(e) or "prompt_style" in str(e) or (
        "max_turns" in str(e) and kind == "discussion" and max_turns < 1)
    return
  drive(wf, responses, 4 * max(max_turns, 0) + 1)
