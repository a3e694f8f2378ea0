"""Fuzzes search QA: action parsing, the search tool's queries and whole episodes (the single
agent, and MATPO's planner with its nested workers)."""
import functools

from hypothesis import example
from hypothesis import strategies as st

from envs import chat, search_qa
from tests.fuzz.drive import drive
from tests.fuzz.strategies import anything, fuzz, texts

CFG = search_qa.default_config()
ACTIONS = ("search", "answer", "delegate", "summary")
# Responses that take actions with fuzzed arguments, as well as any text.
responses = st.one_of(
    anything,
    st.builds(lambda letter, t: f"{letter} {t}", st.sampled_from("SADF"), texts),
    st.builds(lambda action, t: f"<{action}>{t}</{action}>", st.sampled_from(ACTIONS), texts))


@functools.cache
def task(seed: int) -> dict:
  return search_qa.generate_task(seed, "train", CFG)


@fuzz(anything, st.sampled_from(chat.PROMPT_STYLES), st.sets(st.sampled_from(ACTIONS)),
      examples=10, slow=4000)
@example(None, "compact", {"search"})
@example(3, "chat", {"search"})
@example("<summary>" * 12_500, "chat", {"summary"})
def test_parse_action(response, style, allowed):
  parsed = search_qa.parse_action(response, style, tuple(allowed))
  if parsed is not None:
    action, argument = parsed
    assert isinstance(response, str) and action in allowed and argument


@fuzz(texts, examples=15, slow=3000)
@example("zz \u0663\u0663 ab")
def test_search(query):
  if search_qa.valid_query(query):
    episode = search_qa.make_workflow(task(0), "single", CFG, 2)
    assert isinstance(episode.search(query), str)
  assert isinstance(search_qa.same_answer(query, "Bavo"), bool)


@fuzz(st.integers(0, 3), st.sampled_from(["single", "mas"]), st.sampled_from(chat.PROMPT_STYLES),
      st.integers(1, 4), st.sampled_from([0.0, 0.5]), st.booleans(),
      st.lists(responses, min_size=1, max_size=8), examples=15, slow=600)
@example(0, "mas", "compact", 2, 0.0, False, [None, {"worker": "S x"}])
def test_episode(seed, kind, style, max_turns, noise, recap, answers):
  cfg = {**CFG, "noise": noise, "query_recap": recap, "final_summary": recap}
  wf = search_qa.make_workflow(task(seed), kind, cfg, max_turns, style)
  drive(wf, answers, max_turns * (1 + cfg["worker_turns"]))
