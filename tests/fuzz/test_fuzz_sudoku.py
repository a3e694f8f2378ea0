"""Fuzzes Sudoku: fill parsing and whole episodes."""
import functools

from hypothesis import example
from hypothesis import strategies as st

from envs import chat, sudoku
from tests.fuzz.drive import drive
from tests.fuzz.strategies import anything, fuzz

CFG = sudoku.default_config()


@functools.cache
def task(seed: int) -> dict:
  return sudoku.generate_task(seed, "train", CFG)


@fuzz(anything, st.integers(-3, 30), examples=10, slow=4000)
@example(None, 1)
@example(["123"], 1)
def test_parse_fills(text, max_fills):
  fills = sudoku.parse_fills(text, max_fills)
  assert fills is None or (isinstance(text, str) and 1 <= len(fills) <= max_fills)
  for cell, digit in fills or ():
    assert 0 <= cell < 16 and digit in sudoku.DIGITS


@fuzz(st.integers(0, 3), st.sampled_from(["single", "mas"]), st.sampled_from(chat.PROMPT_STYLES),
      st.integers(1, 3), st.lists(anything, min_size=1, max_size=6), examples=15, slow=400)
@example(0, "mas", "compact", 1, [None, 5, {"a": 1}])
@example(0, "single", "chat", 1, ["<answer>" * 12_500])
def test_episode(seed, kind, style, max_fills, responses):
  wf = sudoku.make_workflow(task(seed), kind, {**CFG, "max_fills": max_fills}, CFG["max_turns"],
                            style)
  drive(wf, responses, CFG["max_turns"] * 2)
