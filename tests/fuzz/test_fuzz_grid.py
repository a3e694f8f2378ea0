"""Fuzzes the grid tasks (Plan-Path, Sokoban): move parsing and whole episodes."""
import functools

from hypothesis import example
from hypothesis import strategies as st

from envs import chat, grid, plan_path, sokoban
from tests.fuzz.drive import drive
from tests.fuzz.strategies import anything, fuzz, texts

MODULES = {"plan_path": plan_path, "sokoban": sokoban}


@functools.cache
def task(name: str, seed: int) -> dict:
  module = MODULES[name]
  return module.generate_task(seed, "train", module.default_config())


@fuzz(anything, st.integers(-3, 50), examples=10, slow=4000)
@example(None, 2)
@example(7, 2)
def test_parse_moves(text, max_moves):
  for moves in (grid.parse_moves(text, max_moves), grid.parse_chat_moves(text, max_moves)):
    assert moves is None or (isinstance(text, str) and 1 <= len(moves) <= max_moves
                             and set(moves) <= set("UDLR"))


@fuzz(st.sampled_from(sorted(MODULES)), st.integers(0, 3), st.sampled_from(["single", "mas"]),
      st.sampled_from(chat.PROMPT_STYLES), st.lists(anything, min_size=1, max_size=6),
      examples=15, slow=600)
@example("plan_path", 0, "mas", "compact", [None, {"x": 1}, 3])
def test_episode(name, seed, kind, style, responses):
  module = MODULES[name]
  cfg = module.default_config()
  wf = module.make_workflow(task(name, seed), kind, cfg, cfg["max_turns"], style)
  drive(wf, responses, cfg["max_turns"] * 2)


@fuzz(st.sampled_from(sorted(MODULES)), st.lists(texts, min_size=1, max_size=3), examples=10,
      slow=1000)
def test_episode_unknown_response_keys(name, responses):
  """Responses that name only unknown roles are invalid actions of the acting role."""
  module = MODULES[name]
  cfg = module.default_config()
  wf = module.make_workflow(task(name, 0), "mas", cfg, cfg["max_turns"])
  for response in responses:
    if wf.done:
      break
    (role,) = wf.acting_roles()
    result = wf.act({"nobody": response})
    assert result.outcomes[role].invalid
