"""Fuzzes the math task: the calculator, number and chat answers, and every workflow (single,
mas, the sequential dual and trio, the MAPoRL discussion with verifier scores)."""
import functools
import math

from hypothesis import example
from hypothesis import strategies as st

from envs import arithmetic_eval, chat, discussion, math_task
from tests.fuzz.drive import drive
from tests.fuzz.strategies import anything, fuzz, non_finite, texts

CFG = math_task.default_config()
KINDS = ("single", "mas", "dual", "trio", discussion.KIND)
# Short texts for math-verify (it parses LaTeX with sympy: 100k characters take minutes).
short_texts = texts.filter(lambda t: len(t) < 200)
scores = st.one_of(st.floats(0, 1), st.floats(allow_nan=False), non_finite)


@functools.cache
def task(seed: int) -> dict:
  return math_task.generate_task(seed, "train", CFG)


@fuzz(anything, examples=10, slow=4000)
@example("(" * 300 + "1" + ")" * 300)
@example("9" * 199)
def test_evaluate(text):
  value = arithmetic_eval.evaluate(text)
  assert isinstance(value, arithmetic_eval.EvalError) or (
      type(value) in (int, float) and math.isfinite(value))


@fuzz(anything, examples=10, slow=4000)
@example(None)
def test_parse_number(text):
  value = math_task.parse_number(text)
  assert value is None or (isinstance(text, str) and math.isfinite(value))
  if value is not None:
    assert isinstance(math_task.format_number(value), str)


@fuzz(st.one_of(short_texts, st.none()), examples=15, slow=400)
def test_chat_answers(text):
  value = math_task.chat_value(text)
  assert value is None or isinstance(value, (int, float))
  assert isinstance(math_task.chat_correct(text, 12), bool)


@fuzz(st.one_of(scores, st.floats()), examples=10, slow=2000)
@example(math.nan)
@example(math.inf)
def test_score_digit(score):
  try:
    digit = discussion.score_digit(score)
  except ValueError as e:
    assert math.isnan(score) and "score" in str(e)
  else:
    assert digit in "0123456789" and len(digit) == 1


@fuzz(st.integers(0, 3), st.sampled_from(KINDS), st.sampled_from(chat.PROMPT_STYLES),
      st.integers(1, 4), st.lists(st.one_of(short_texts, st.builds(str, st.integers()),
                                            anything.filter(lambda t: not isinstance(t, str))),
                                  min_size=1, max_size=6), examples=15, slow=600)
@example(0, "mas", "compact", 2, [None, 3, ["12"]])
def test_episode(seed, kind, style, max_turns, responses):
  wf = math_task.make_workflow(task(seed), kind, CFG, max_turns, style)
  drive(wf, responses, max_turns * 3)


@fuzz(st.integers(1, 3), st.sampled_from(chat.PROMPT_STYLES), st.lists(texts, max_size=4),
      st.lists(scores, min_size=1, max_size=4), examples=15, slow=400)
@example(1, "compact", ["12"], [math.nan])
@example(1, "chat", ["12"], [math.inf])
def test_discussion_scores(agents, style, responses, verifier_scores):
  """Verifier scores of any float: shown (finite ones, clipped), or one clear ValueError."""
  wf = math_task.make_workflow(task(0), discussion.KIND, {"agents": agents}, 2, style)
  try:
    drive(wf, [r[:200] for r in responses], 2, verifier_scores)
  except ValueError as e:
    assert "score" in str(e) and any(not math.isfinite(s) for s in verifier_scores)
