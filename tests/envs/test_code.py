"""The code task: specs and hidden tests checked independently, expert demonstrations, rewards
on hand-computed examples, robust parsing (fuzzed), disjoint deterministic splits."""
import ast
import re

import hypothesis
from hypothesis import strategies as st
import pytest

from envs import code, sandbox

CFG = code.default_config()
ALL = {**CFG, "families": list(code.FAMILIES)}

# An independent reading of the formula notation (not the module's tables).
_STR = {"rev": lambda s: "".join(reversed(s)), "twice": lambda s: s * 2,
        "up": lambda s: "".join(chr(ord(c) - 32) for c in s), "first": lambda s: s[:1],
        "last": lambda s: s[len(s) - 1:], "tail": lambda s: s[1:], "init": lambda s: s[:len(s) - 1],
        "sort": lambda s: "".join(sorted(list(s)))}


def _coef(text):
  return {"": 1, "-": -1}.get(text, None) or int(text)


def _from_formula(spec):
  """The function a formula spec describes, as a Python callable."""
  if m := re.fullmatch(r"f\(x\)=(-?\d*)x([+-]\d+)?", spec):
    a, b = _coef(m[1]), int(m[2] or 0)
    return lambda x: a * x + b
  if m := re.fullmatch(r"f\(a,b\)=(-?\d*)(max|min)\(a,b\)([+-]\d+)?", spec):
    k, pick, c = _coef(m[1]), m[2], int(m[3] or 0)
    return lambda a, b: k * ((a if a >= b else b) if pick == "max" else (a if a <= b else b)) + c
  if m := re.fullmatch(r"f\(x\)=x>(-?\d+)\?(-?\d*)x:(-?\d+)", spec):
    t, u, c = int(m[1]), _coef(m[2]), int(m[3])
    return lambda x: c if x <= t else u * x
  m = re.fullmatch(r"f\(s\)=(\w+)\(s\)(?:\+'(.)')?", spec)
  op, suffix = _STR[m[1]], m[2] or ""
  return lambda s: op(s) + suffix


def _tasks(count, split="train", cfg=ALL, start=0):
  return [code.generate_task(seed, split, cfg) for seed in range(start, start + count)]


def test_hidden_tests_match_an_independent_reading_of_the_spec():
  for split in ("train", "test"):
    for task in _tasks(300, split):
      f = _from_formula(task["spec"])
      assert len(task["hidden"]) == CFG["hidden_tests"]
      assert len({tuple(x) for x, _ in task["hidden"]}) == len(task["hidden"])
      for x, expected in task["hidden"]:
        assert f(*x) == expected, (task, x)
      if task["family"] == "cond":  # the threshold's two sides are always tested
        t = task["params"][0]
        assert {t, t + 1} <= {x[0] for x, _ in task["hidden"]}


def test_reference_solutions_pass_their_hidden_tests_in_the_sandbox():
  for task in _tasks(40):
    inputs = [x for x, _ in task["hidden"]]
    source = (f"def f({','.join(task['args'])}):\n  return {task['solution']}\n"
              f"for x in {inputs!r}:\n  print(repr(f(*x)))\n")
    result = sandbox.run_python(source)
    assert result.ok, (task, result)
    assert result.stdout.splitlines() == [repr(y) for _, y in task["hidden"]], task


def _all_params(family):
  if family == "affine":
    return [[a, b] for a in (-3, -2, -1, 1, 2, 3) for b in range(-9, 10)]
  if family == "maxmin":
    return [[op, k, c] for op in ("max", "min") for k in (1, 2, -1) for c in range(-9, 10)]
  if family == "cond":
    return [[t, u, c] for t in range(-3, 4) for u in (1, -1, 2) for c in range(-9, 10)]
  return [[op, s] for op in _STR for s in ("", "a", "b", "c", "x", "y", "z", "!")]


def test_examples_specs_are_consistent_and_pin_the_function_down():
  cfg = {**ALL, "spec": "examples"}
  for task in _tasks(200, cfg=cfg):
    examples = re.findall(r"f\(([^)]*)\)=(\S+)", task["spec"])
    assert len(examples) == len(task["probe"]) >= 2
    shown = [(ast.literal_eval(f"({args},)"), ast.literal_eval(value)) for args, value in examples]
    fitting = [p for p in _all_params(task["family"])
               if all(code.reference(task["family"], p, x) == y for x, y in shown)]
    # A brute-force search over the family finds the hidden function and only functions that
    # equal it on every input.
    assert task["params"] in fitting
    domain = [(x,) for x in range(-30, 31)] if task["family"] in ("affine", "cond") else (
        [(a, b) for a in range(-12, 13) for b in range(-12, 13)] if task["family"] == "maxmin"
        else [(s,) for s in ("a", "ab", "ba", "abc", "zyx", "aab", "dcba")])
    for other in fitting:
      assert all(code.reference(task["family"], other, x) ==
                 code.reference(task["family"], task["params"], x) for x in domain), (task, other)


def test_splits_are_disjoint_and_generation_is_deterministic():
  for cfg in (CFG, ALL):
    train = {repr((t["family"], t["params"])) for t in _tasks(300, "train", cfg)}
    test = {repr((t["family"], t["params"])) for t in _tasks(300, "test", cfg)}
    assert train and test and not train & test
    assert len(test) > 20
  assert code.generate_task(7, "test", ALL) == code.generate_task(7, "test", ALL)
  assert len({repr(code.generate_task(s, "train", CFG)) for s in range(50)}) > 40
  for task in _tasks(100, "test"):
    assert code.function_split(task["family"], task["params"]) == "test"
  with pytest.raises(ValueError):
    code.generate_task(0, "valid", CFG)


def _play_expert(task, kind, cfg):
  wf = code.make_workflow(task, kind, cfg, cfg["max_turns"])
  while not wf.done:
    result = wf.act({r: wf.expert_response(r) for r in wf.acting_roles()})
    assert all(o.reward == 1.0 and not o.invalid for o in result.outcomes.values())
  return wf


def test_expert_demonstrations_always_succeed():
  for spec in ("formula", "examples"):
    cfg = {**ALL, "spec": spec}
    for split in ("train", "test"):
      for task in _tasks(16, split, cfg):
        for kind in ("single", "mas"):
          wf = _play_expert(task, kind, cfg)
          assert wf.success and not wf.failed and wf.turn <= cfg["max_turns"], (task, kind)


TASK = {"family": "affine", "params": [3, 1], "args": ["x"], "spec": "f(x)=3x+1",
        "solution": "3*x+1", "probe": [[0], [1]],
        "hidden": [[[0], 1], [[1], 4], [[2], 7], [[-1], -2]]}


def test_rewards_on_a_hand_computed_example():
  wf = code.make_workflow(TASK, "mas", CFG, 3)
  assert wf.prompt("coder") == [{"role": "user", "content": "C f(x)=3x+1"}]
  assert wf.prompt("tester") == [{"role": "user", "content": "T f(x)=3x+1"}]
  # Code right for x>0 only: passes x=1, 2 of (0, 1, 2, -1). Tests: the first max_tests=4
  # items count: right, wrong (f(2) is 7), unparseable, right -> 2/4.
  result = wf.act({"coder": "3*x+1 if x>0 else 0",
                   "tester": "f(1)==4; f(2)=8\nf(x)==1;f(-1)==-2;f(5)==16"})
  assert result.outcomes["coder"] == code.RoleOutcome(0.5, False)
  assert result.outcomes["tester"] == code.RoleOutcome(2 / 4, False)
  assert result.team_reward == 0.5
  assert not wf.done and wf.turn == 1
  expected = "c:3*x+1 if x>0 else 0\nt:f(1)==4 ok;f(2)==8 got 7;f(-1)==-2 got 0"
  assert wf.prompt("coder")[0]["content"] == "C f(x)=3x+1\n" + expected
  assert wf.prompt("tester")[0]["content"] == "T f(x)=3x+1\n" + expected
  # Garbage code and no tests: invalid, reward 0; then the right code succeeds.
  result = wf.act({"coder": "3*x+", "tester": "seven"})
  assert result.outcomes == {"coder": code.RoleOutcome(0.0, True),
                             "tester": code.RoleOutcome(0.0, True)}
  assert wf.prompt("coder")[0]["content"] == "C f(x)=3x+1\nc:3*x+\nt:-"
  result = wf.act({"coder": "def f(x):\n  return x*3+1", "tester": "f(0)==1"})
  assert result.outcomes["coder"].reward == 1.0 and wf.success and wf.done


def test_mas_ends_when_the_code_passes_the_testers_tests():
  wf = code.make_workflow(TASK, "mas", CFG, 3)
  result = wf.act({"coder": "3*x+1 if x<2 else 0", "tester": "f(0)==1;f(1)==4"})
  assert result.outcomes["coder"].reward == 0.75 and result.outcomes["tester"].reward == 1.0
  assert wf.done and wf.failed and not wf.success


def test_failed_calls_show_as_errors_and_survive_clone():
  wf = code.make_workflow(TASK, "mas", CFG, 3)
  wf.act({"coder": "1//x", "tester": "f(0)==1;f(1)==4"})
  expected = "C f(x)=3x+1\nc:1//x\nt:f(0)==1 got err;f(1)==4 got 1"
  assert wf.prompt("coder")[0]["content"] == expected
  assert wf.clone().prompt("coder")[0]["content"] == expected


def test_turn_limit_and_single_agent():
  wf = code.make_workflow(TASK, "single", CFG, 2)
  assert wf.prompt("agent") == [{"role": "user", "content": "f(x)=3x+1"}]
  first = wf.act({"agent": "x+1"})  # right at x=0 only
  assert first.outcomes == {"agent": code.RoleOutcome(0.25, False)}
  assert wf.prompt("agent")[0]["content"] == "f(x)=3x+1\nc:x+1"
  clone = wf.clone()
  last = wf.act({"agent": "2*x+1"})  # right at x=0 only; no failure penalty in the spec
  assert last.outcomes == {"agent": code.RoleOutcome(0.25, False)} and last.team_reward == 0.25
  assert wf.done and not wf.success and not wf.failed
  assert clone.act({"agent": "1+3*x"}).team_reward == 1.0 and clone.success and not wf.success


def test_hostile_code_is_a_failing_candidate():
  cfg = {**CFG, "timeout_s": 0.3}
  hostile = ["def f(x):\n  while True: pass", "import os\nos.system('touch /etc/x')\nx",
             "[__import__('os').fork() for _ in range(9)] and 10**6", "[1]*10**10", "x" * 500,
             "", "def g(x): return 1", "exit()", "print('@' * 100)", "f(x)",
             "open('/etc/passwd').read()"]
  for response in hostile:
    wf = code.make_workflow(TASK, "single", cfg, 3)
    result = wf.act({"agent": response})
    assert result.outcomes["agent"].reward == 0.0, response


def test_candidate_outputs_are_compared_outside_the_sandbox():
  source = code.candidate_source("x if x else 'a'", ["x"])
  assert code.run_candidate(source, ((0,), (2,), ("b",)), 1.0, 256) == ("a", 2, "b")
  source = code.candidate_source("[x]", ["x"])  # not a plain value: fails
  assert code.run_candidate(source, ((1,),), 1.0, 256) == (code.FAIL,)
  assert code.run_candidate("f = 1/0", ((1,),), 1.0, 256) is None


def test_parse_tests():
  text = "f(1,2)==3;f( 'a' ) = 'b'\n\nf(1)==2;f(True,1)==2;f(1,2)==3"
  tests = code.parse_tests(text, "maxmin", 5)
  assert tests == code.Tests(items=5, valid=(((1, 2), 3), ((1, 2), 3)))
  assert code.parse_tests("f('ab')=='ba';f('')==''", "str", 4).valid == ((("ab",), "ba"),)
  assert code.parse_tests("", "affine", 4) == code.Tests(0, ())
  assert code.parse_tests("f(1)==" + "9" * 100, "affine", 4) == code.Tests(1, ())


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(st.text(), st.sampled_from(code.FAMILIES), st.integers(0, 6))
def test_parsers_never_raise(text, family, max_tests):
  tests = code.parse_tests(text, family, max_tests)
  assert tests.items <= max_tests and len(tests.valid) <= tests.items
  for args, _ in tests.valid:  # legal inputs of the reference
    for params in _all_params(family)[::5]:
      code.reference(family, params, args)
  assert code.candidate_source(text, ["x"]).endswith("\n")


ADVERSARIAL = ["f(1)==", "f(", "==", ";;;", "f(1)==f(1)", "f(*[1])==1", "f(x=1)==1",
               "f(1)==1==1", "f(10**9)==1", "f(" + "(" * 300 + ")==1", "\x00", "\ud800",
               "f(1)==" + "[" * 1000, "é" * 100, "def f(:", "1)\nimport os\nos.fork()#"]


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(st.one_of(st.text(max_size=80), st.sampled_from(ADVERSARIAL)),
                  st.one_of(st.text(max_size=80), st.sampled_from(ADVERSARIAL)),
                  st.integers(0, 200))
def test_workflows_never_raise_on_any_text(coder, tester, seed):
  task = code.generate_task(seed, "train", ALL)
  for kind, roles in (("mas", ("coder", "tester")), ("single", ("agent",))):
    wf = code.make_workflow(task, kind, ALL, 3)
    result = wf.act(dict(zip(roles, (coder, tester))))
    assert set(result.outcomes) == set(roles)
    for outcome in result.outcomes.values():
      assert 0.0 <= outcome.reward <= 1.0
    for role in roles:
      content = wf.prompt(role)[0]["content"]
      assert all(c == "\n" or " " <= c <= "~" for c in content)


def test_prompts_are_short():
  lengths = []
  for task in _tasks(50):
    wf = code.make_workflow(task, "mas", CFG, 3)
    wf.act({"coder": task["solution"] + "+1", "tester": wf.expert_response("tester")})
    lengths += [max(len(line) for line in wf.prompt(r)[0]["content"].split("\n"))
                for r in wf.roles]
  assert max(lengths) < 80
