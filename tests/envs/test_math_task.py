"""Math word problems and the safe calculator: generated answers checked independently, the
JSONL loader, expert demonstrations, rewards by hand, splits, determinism, and fuzzing of the
calculator and the answer parser (errors, never exceptions, never slow)."""
import fractions
import hashlib
import json
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs import arithmetic_eval, math_task, registry
from envs.arithmetic_eval import EvalError, evaluate
from marft.rollout.workflow import RoleOutcome

CFG = math_task.default_config()
TASK = {"question": "Ann has 3 bags of 4 nuts and loses 2. Left?", "answer": 10,
        "expression": "3*4-2"}
Q = TASK["question"]


def play(kind, responses, max_turns=3, task=TASK):
  wf = math_task.make_workflow(task, kind, CFG, max_turns)
  return wf, [wf.act(r) for r in responses]


# ---------------------------------------------------------------- the calculator


@pytest.mark.parametrize("text, value", [
    ("3*4-2", 10), (" 12/3+2 ", 6.0), ("7//2", 3), ("-7//2", -4), ("7%3", 1), ("-7%3", 2),
    ("2**10", 1024), ("2**-1", 0.5), ("(-2)**3", -8), ("-2**2", -4), ("3.0**2", 9.0),
    ("(1+2)*(3+4)", 21), ("--3", 3), ("1.5*4", 6.0), (".5+1.", 1.5), ("10**6*10**6", 10**12),
    ("2**2**3", 256), ("((((7))))", 7), ("999999999999", 999999999999),
])
def test_evaluate_values(text, value):
  result = evaluate(text)
  assert result == value and type(result) is type(value)


ADVERSARIAL = [
    "__import__('os')", "__import__('os').system('ls')", "9**9**9", "1/0", "5//0", "5%0",
    "0**-1", "2**0.5", "(-8)**(1/3)", "10**13", "10**12+1", "999999999999*999999999999",
    "9999999999999", "2**-10000", "10**10**10", "1e400", "1e5", "2j", "0x10", "1_000", "True",
    "None", "lambda: 1", "(lambda x: x)(1)", "(1).real", "().__class__", "x", "abs(-1)",
    "[1, 2]", "'a'*3", "1 if 1 else 2", "1<2", "~1", "not 1", "+1", "1,2", "a=1", "", "   ",
    "(" * 1000, "(" * 150 + "1" + ")" * 150, "-" * 10**5 + "1", "1" * 10**5, "x" * 10**6,
    "\x00", "\uff11+\uff11", "\u0661+\u0661", "print(1)", "open('/etc/passwd')",
    "[x for x in range(10**9)]", "9" * 200, "1\n+1", "3*4-2=10", "()", "1 2", "01",
]


@pytest.mark.parametrize("text", ADVERSARIAL)
def test_adversarial_inputs_are_errors_and_fast(text):
  tick = time.perf_counter()
  result = evaluate(text)
  assert time.perf_counter() - tick < 0.05
  assert isinstance(result, EvalError) and result.reason


def test_bounds_are_the_documented_ones():
  assert evaluate("(" * 99 + "1" + ")" * 99) == 1  # 199 characters
  assert isinstance(evaluate("(" * 100 + "1" + ")" * 100), EvalError)  # 201 characters
  assert evaluate(f"2**{arithmetic_eval.MAX_EXPONENT}") == 2**arithmetic_eval.MAX_EXPONENT
  assert isinstance(evaluate(f"2**{arithmetic_eval.MAX_EXPONENT + 1}"), EvalError)
  assert evaluate(str(arithmetic_eval.MAX_ABS)) == arithmetic_eval.MAX_ABS
  assert isinstance(evaluate(f"{arithmetic_eval.MAX_ABS}+1"), EvalError)
  assert evaluate("1/0") == EvalError("division by zero")


# Random expression trees: ("n", int), ("neg", tree) or (op, left, right); the test's own
# recursive evaluator (exact fractions, Python's int semantics for // and %) is the oracle.
OPS = ["+", "-", "*", "/", "//", "%"]
trees = st.recursive(
    st.builds(lambda n: ("n", n), st.integers(0, 10**6)),
    lambda sub: st.one_of(st.tuples(st.sampled_from(OPS), sub, sub),
                          st.tuples(st.just("neg"), sub)),
    max_leaves=12)


def to_text(tree) -> str:
  if tree[0] == "n":
    return str(tree[1])
  if tree[0] == "neg":
    return f"-({to_text(tree[1])})"
  return f"({to_text(tree[1])}){tree[0]}({to_text(tree[2])})"


def has_true_division(tree) -> bool:
  return tree[0] == "/" or any(isinstance(t, tuple) and has_true_division(t) for t in tree[1:])


class Inexact(Exception):
  """// or % of a non-integer: float rounding decides the result; not compared."""


def oracle(tree) -> tuple[fractions.Fraction, fractions.Fraction]:
  """(exact value, largest magnitude of any intermediate); raises ZeroDivisionError as Python."""
  if tree[0] == "n":
    return fractions.Fraction(tree[1]), fractions.Fraction(tree[1])
  if tree[0] == "neg":
    value, largest = oracle(tree[1])
    return -value, largest
  (a, la), (b, lb) = oracle(tree[1]), oracle(tree[2])
  if tree[0] in ("//", "%") and (a.denominator != 1 or b.denominator != 1):
    raise Inexact
  value = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b,
           "//": lambda: fractions.Fraction(int(a) // int(b)),
           "%": lambda: fractions.Fraction(int(a) % int(b))}[tree[0]]()
  return value, max(la, lb, abs(value))


@settings(max_examples=400, deadline=None)
@given(trees)
def test_random_expressions_match_an_exact_oracle(tree):
  text = to_text(tree)
  result = evaluate(text)
  if len(text) > arithmetic_eval.MAX_LENGTH:
    assert isinstance(result, EvalError)
    return
  bound = EvalError(f"not a number of magnitude at most {arithmetic_eval.MAX_ABS}")
  try:
    value, largest = oracle(tree)
    expected = bound if largest > arithmetic_eval.MAX_ABS else value
  except Inexact:
    return
  except ZeroDivisionError:
    expected = EvalError("division by zero")
  if not has_true_division(tree):  # integers only: exact
    assert result == expected
    assert type(result) is (EvalError if isinstance(expected, EvalError) else int)
  elif isinstance(result, EvalError):  # floats: a zero or a bound may differ by rounding
    assert result in (expected, EvalError("division by zero"), bound)
  else:
    assert not isinstance(expected, EvalError) or expected == bound
    if expected is not bound:
      assert abs(result - float(value)) <= 1e-9 * max(1.0, float(largest))


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=300), st.text(alphabet="0123456789.+-*/%() ", max_size=250),
                 st.text(alphabet="9*()-", max_size=60), st.sampled_from(ADVERSARIAL)))
def test_fuzzed_text_gives_a_number_or_an_error_quickly(text):
  tick = time.perf_counter()
  result = evaluate(text)
  assert time.perf_counter() - tick < 0.05
  assert type(result) in (int, float, EvalError)
  if type(result) is not EvalError:
    assert abs(result) <= arithmetic_eval.MAX_ABS


# ---------------------------------------------------------------- task generation and loading


def test_registry_and_module_interface():
  assert registry.get_task("math") is math_task
  assert math_task.NAME == "math"
  assert "max_turns" in math_task.default_config()


@pytest.mark.parametrize("split", ["train", "test"])
def test_generated_answers_are_exact(split):
  for seed in range(300):
    task = math_task.generate_task(seed, split, CFG)
    question, expression, answer = task["question"], task["expression"], task["answer"]
    assert re.fullmatch(r"[0-9+\-*/]+", expression)  # only digits and operators: eval is safe
    assert fractions.Fraction(eval(expression)) == answer  # noqa: S307 (test oracle)
    assert type(answer) is int and answer >= 0
    assert sorted(re.findall(r"\d+", question)) == sorted(re.findall(r"\d+", expression))
    steps = len(re.findall(r"[+\-*/]", expression))
    assert CFG["min_steps"] <= steps <= CFG["max_steps"]
    assert len(question) <= 60 and len(expression) <= 7
    assert json.loads(json.dumps(task)) == task


def test_step_counts_follow_the_config():
  for steps in (2, 3):
    cfg = dict(CFG, min_steps=steps, max_steps=steps)
    for seed in range(50):
      expression = math_task.generate_task(seed, "train", cfg)["expression"]
      assert len(re.findall(r"[+\-*/]", expression)) == steps


def test_splits_are_disjoint_and_follow_the_hash():
  train = {math_task.generate_task(s, "train", CFG)["question"] for s in range(400)}
  test = {math_task.generate_task(s, "test", CFG)["question"] for s in range(400)}
  assert len(train) > 380 and len(test) > 380
  assert not train & test
  for question in test:
    assert int(hashlib.sha256(question.encode()).hexdigest(), 16) % 10 == 0


def test_generation_is_deterministic():
  first = [math_task.generate_task(s, "train", CFG) for s in range(30)]
  assert first == [math_task.generate_task(s, "train", dict(CFG)) for s in range(30)]
  assert first != [math_task.generate_task(s, "test", CFG) for s in range(30)]


def test_load_jsonl(tmp_path):
  rows = [
      {"question": "Tom has 2 cats and 3 dogs. Pets?",
       "answer": "2 cats + 3 dogs = <<2+3=5>>5 pets.\n#### 5"},
      {"question": "A shop sells 1,200 pens a day. In 2 days?",
       "answer": "1,200 * 2 = 2,400\n#### 2,400"},
      {"question": "Owe 7, pay 10. Net?", "answer": "#### -3"},
      {"question": "Half of 5?", "answer": "2.5"},
      {"question": "What is $\\frac{4}{2}$?", "answer": "The answer is $\\boxed{2}$."},
      {"question": "Simplify x+x.", "answer": "\\boxed{2x}"},  # not a number: skipped
  ]
  path = tmp_path / "gsm.jsonl"
  path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
  tasks = math_task.load_jsonl(str(path))
  assert [(t["question"], t["answer"], t["expression"]) for t in tasks] == [
      (rows[0]["question"], 5, "5"), (rows[1]["question"], 2400, "2400"),
      (rows[2]["question"], -3, "-3"), (rows[3]["question"], 2.5, "2.5"),
      (rows[4]["question"], 2, "2")]
  for task in tasks:
    for kind in ("single", "mas"):
      wf = math_task.make_workflow(task, kind, CFG, 3)
      wf.act({r: wf.expert_response(r) for r in wf.acting_roles()})
      assert wf.success and wf.done


# ---------------------------------------------------------------- workflows and rewards


@pytest.mark.parametrize("kind", ["single", "mas"])
def test_expert_solves_every_instance(kind):
  for seed in range(300):
    task = math_task.generate_task(seed, "test" if seed % 2 else "train", CFG)
    wf = math_task.make_workflow(task, kind, CFG, CFG["max_turns"])
    while not wf.done:
      result = wf.act({r: wf.expert_response(r) for r in wf.acting_roles()})
    assert wf.success and not wf.failed and wf.turn == 1
    assert all(o == RoleOutcome(1.0, False) for o in result.outcomes.values())
    assert result.team_reward == 1.0


def test_single_rewards_by_hand():
  wf = math_task.make_workflow(TASK, "single", CFG, 3)
  assert wf.roles == ("agent",) and wf.stages() == (("agent",),)
  assert wf.prompt("agent") == [{"role": "user", "content": Q}]
  assert wf.expert_response("agent") == "10"
  (result,) = [wf.act({"agent": " 10 "})]
  assert result.outcomes == {"agent": RoleOutcome(1.0, False)} and result.team_reward == 1.0
  assert wf.success and wf.done
  wf, (result,) = play("single", [{"agent": "12"}])
  assert result.outcomes == {"agent": RoleOutcome(0.0, False)} and result.team_reward == 0.0
  assert wf.failed and wf.done and not wf.success
  wf, (result,) = play("single", [{"agent": "ten"}])
  assert result.outcomes == {"agent": RoleOutcome(0.0, True)} and wf.done


def test_mas_rewards_history_and_agreement_by_hand():
  wf = math_task.make_workflow(TASK, "mas", CFG, 3)
  assert wf.roles == ("tool", "reasoner") and wf.stages() == (("tool", "reasoner"),)
  assert wf.prompt("tool")[0]["content"] == f"T {Q}"
  assert wf.prompt("reasoner")[0]["content"] == f"R {Q}"
  assert (wf.expert_response("tool"), wf.expert_response("reasoner")) == ("3*4-2", "10")

  r1 = wf.act({"tool": "3*4", "reasoner": "10"})  # tool wrong, reasoner right, no agreement
  assert r1.outcomes == {"tool": RoleOutcome(0.0, False), "reasoner": RoleOutcome(1.0, False)}
  assert r1.team_reward == 1.0 and not wf.done
  assert wf.prompt("tool")[0]["content"] == f"T {Q} T3*4=12 R10"

  r2 = wf.act({"tool": "1/0", "reasoner": "x"})  # failed execution, unparseable answer
  assert r2.outcomes == {"tool": RoleOutcome(-1.0, True), "reasoner": RoleOutcome(0.0, True)}
  assert r2.team_reward == 0.0 and not wf.done
  assert wf.prompt("reasoner")[0]["content"] == f"R {Q} T3*4=12 R10 T1/0=err R?"

  r3 = wf.act({"tool": "3*4-2", "reasoner": "10"})  # agreement on the right answer
  assert r3.outcomes == {"tool": RoleOutcome(1.0, False), "reasoner": RoleOutcome(1.0, False)}
  assert r3.team_reward == 1.0 and wf.success and wf.done and wf.turn == 3


def test_mas_agreement_on_a_wrong_answer_fails():
  wf, (result,) = play("mas", [{"tool": "3*4", "reasoner": "12"}])
  assert result.outcomes == {"tool": RoleOutcome(0.0, False), "reasoner": RoleOutcome(0.0, False)}
  assert wf.done and wf.failed and not wf.success and wf.turn == 1


def test_mas_turn_limit_judges_the_final_answer():
  wf, _ = play("mas", [{"tool": "3*4", "reasoner": "9"}, {"tool": "3*4", "reasoner": "10"}],
               max_turns=2)
  assert wf.done and wf.success
  wf, _ = play("mas", [{"tool": "3*4", "reasoner": "10"}, {"tool": "3*4", "reasoner": "9"}],
               max_turns=2)
  assert wf.done and not wf.success
  wf, _ = play("mas", [{"tool": "3*4-2", "reasoner": "10.0"}])  # 10.0 agrees with 10
  assert wf.success and wf.turn == 1


@pytest.mark.parametrize("text, value", [
    ("12", 12), (" -3\n", -3), ("2.5", 2.5), ("1,000", 1000), ("so #### 42", 42), ("007", 7),
    (".5", 0.5), ("", None), ("abc", None), ("1e5", None), ("1/2", None), ("12 apples", None),
    ("\u0661\u0662", None), ("\uff11\uff12", None), ("9" * 5000, None), ("--1", None),
])
def test_parse_number_cases(text, value):
  result = math_task.parse_number(text)
  assert result == value and type(result) is type(value)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=60), st.text(alphabet="0123456789.+-*/ #,", max_size=20),
                 st.sampled_from(ADVERSARIAL)),
       st.one_of(st.text(max_size=60), st.text(alphabet="0123456789.-# ,", max_size=12),
                 st.sampled_from(ADVERSARIAL)))
def test_fuzzed_responses_never_raise(tool, reasoner):
  wf = math_task.make_workflow(TASK, "mas", CFG, 3)
  while not wf.done:
    result = wf.act({"tool": tool, "reasoner": reasoner})
    assert result.outcomes["tool"].reward in (-1.0, 0.0, 1.0)
    assert result.outcomes["reasoner"].reward in (0.0, 1.0)
    assert result.team_reward == result.outcomes["reasoner"].reward
  for role in wf.roles:
    content = wf.prompt(role)[0]["content"]
    assert content.isascii() and len(content) < len(Q) + 3 * 48
  wf = math_task.make_workflow(TASK, "single", CFG, 3)
  result = wf.act({"agent": reasoner})
  assert result.outcomes["agent"].reward in (0.0, 1.0) and wf.done
