"""MAPoRL's multi-agent discussion (`envs/discussion.py`) through the math task's hook
(`math_task.make_workflow(task, "discussion", ...)`): prompts, score digits, grading, rewards,
termination, the stand-in verifier, chat prompts, and one engine rollout with a fake sampler
and a fake verifier, all checked against strings and numbers written out by hand."""
import numpy as np
import pytest

import jax

from envs import discussion, math_task
from marft.rollout.engine import RolloutConfig, Sample, collect
from marft.tokenizers import CharTokenizer

TOK = CharTokenizer(128)


def cfg(agents):
  return {**math_task.default_config(), "agents": agents}


def make(task, agents=2, max_turns=3, style="compact"):
  return math_task.make_workflow(task, "discussion", cfg(agents), max_turns, style)


def task_of(seed=0):
  return math_task.generate_task(seed, "train", math_task.default_config())


def content(messages):
  assert len(messages) == 1 and messages[0]["role"] == "user"
  return messages[0]["content"]


def user_text(messages):
  return "\n".join(m["content"] for m in messages if m["role"] == "user")


def all_text(messages):
  return "\n".join(m["content"] for m in messages)


def wrong_of(task):
  return str(task["answer"] + 1)


# ------------------------------------------------------------------------ roles, prompts


@pytest.mark.parametrize("agents", [1, 2, 3, 5])
def test_roles_and_one_parallel_stage(agents):
  wf = make(task_of(), agents)
  assert wf.roles == tuple(f"agent{i}" for i in range(1, agents + 1))
  assert wf.stages() == (wf.roles,)
  assert wf.acting_roles() == wf.roles


def test_default_agents_is_two():
  wf = math_task.make_workflow(task_of(), "discussion", math_task.default_config(), 3)
  assert wf.roles == ("agent1", "agent2")


def test_first_turn_prompt_is_the_question():
  task = task_of(3)
  wf = make(task, agents=3)
  for role in wf.roles:
    assert content(wf.prompt(role)) == f"D {task['question']}"


def test_later_prompt_lists_own_then_others_with_digits():
  task = task_of(1)
  q, ans = task["question"], task["answer"]
  wf = make(task, agents=3)
  wf.observe_scores({"agent1": 0.87, "agent2": 0.35, "agent3": 1.0})
  wf.act({"agent1": str(ans), "agent2": "no idea", "agent3": wrong_of(task)})
  w = wrong_of(task)
  assert content(wf.prompt("agent1")) == f"D {q} Y{ans}:8 O?:3 O{w}:9"
  assert content(wf.prompt("agent2")) == f"D {q} Y?:3 O{ans}:8 O{w}:9"
  assert content(wf.prompt("agent3")) == f"D {q} Y{w}:9 O{ans}:8 O?:3"
  # Turn 3 shows turn 2's answers only, with turn 2's scores.
  wf.observe_scores({"agent1": 0.05, "agent2": 0.5, "agent3": 0.74})
  wf.act({"agent1": "1,000", "agent2": f"{ans}.0", "agent3": "12.5"})
  assert content(wf.prompt("agent2")) == f"D {q} Y{ans}:5 O1000:0 O12.5:7"


@pytest.mark.parametrize("score, digit", [(0.0, "0"), (0.05, "0"), (0.15, "1"), (0.49, "4"),
                                          (0.5, "5"), (0.74, "7"), (0.99, "9"), (1.0, "9")])
def test_score_digit_in_prompt(score, digit):
  task = task_of(2)
  wf = make(task, agents=2)
  wf.observe_scores({"agent1": score, "agent2": 0.25})
  wf.act({"agent1": str(task["answer"]), "agent2": "7"})
  assert content(wf.prompt("agent1")) == f"D {task['question']} Y{task['answer']}:{digit} O7:2"
  assert content(wf.prompt("agent2")) == f"D {task['question']} Y7:2 O{task['answer']}:{digit}"


def test_single_agent_prompt_has_no_others():
  task = task_of(4)
  wf = make(task, agents=1)
  wf.observe_scores({"agent1": 0.62})
  wf.act({"agent1": str(task["answer"])})
  assert content(wf.prompt("agent1")) == f"D {task['question']} Y{task['answer']}:6"


# ------------------------------------------------------------------ outcomes and rewards


def test_outcomes_rewards_and_invalid():
  task = task_of(5)
  wf = make(task, agents=3, max_turns=3)
  result = wf.act({"agent1": str(task["answer"]), "agent2": "x?", "agent3": wrong_of(task)})
  out = result.outcomes
  assert (out["agent1"].reward, out["agent1"].invalid) == (1.0, False)
  assert (out["agent2"].reward, out["agent2"].invalid) == (0.0, True)
  assert (out["agent3"].reward, out["agent3"].invalid) == (0.0, False)
  assert result.team_reward == 0.0
  # A missing response is unparseable too.
  result = wf.act({"agent1": str(task["answer"]), "agent3": str(task["answer"])})
  assert result.outcomes["agent2"].invalid and result.outcomes["agent2"].reward == 0.0
  assert result.team_reward == 0.0
  result = wf.act({"agent1": str(task["answer"]), "agent2": "", "agent3": str(task["answer"])})
  assert result.team_reward == pytest.approx(2 / 3)
  assert wf.done and wf.success


@pytest.mark.parametrize("max_turns", [1, 2, 4])
def test_done_exactly_after_max_turns_even_when_all_right(max_turns):
  task = task_of(6)
  wf = make(task, agents=2, max_turns=max_turns)
  right = {"agent1": str(task["answer"]), "agent2": str(task["answer"])}
  teams = []
  for turn in range(max_turns):
    assert not wf.done and not wf.success and wf.turn == turn
    teams.append(wf.act(right).team_reward)
  assert wf.done and wf.success and wf.turn == max_turns
  assert teams == [0.0] * (max_turns - 1) + [1.0]


@pytest.mark.parametrize("agents, right, success", [
    (1, 1, True), (1, 0, False), (2, 1, True), (2, 0, False), (3, 2, True), (3, 1, False),
    (4, 2, True), (4, 1, False), (5, 3, True), (5, 2, False)])
def test_success_iff_at_least_half_final_answers_right(agents, right, success):
  task = task_of(7)
  wf = make(task, agents=agents, max_turns=2)
  roles = wf.roles
  # Turn 1: the opposite of the final turn, so only the final answers can decide.
  wf.act({r: (wrong_of(task) if i < right else str(task["answer"])) for i, r in enumerate(roles)})
  assert not wf.success
  result = wf.act({r: (str(task["answer"]) if i < right else wrong_of(task))
                   for i, r in enumerate(roles)})
  assert wf.success == success and wf.done
  assert result.team_reward == pytest.approx(right / agents)


# ------------------------------------------------------------------ stand-in verifier


def _digits(prompt_text):
  return [int(part.rsplit(":", 1)[1]) for part in prompt_text.split(" ")
          if part[:1] in "YO" and ":" in part]


def test_stand_in_scores_ranges_and_determinism():
  for seed in range(25):
    task = task_of(seed)
    wf = make(task, agents=3, max_turns=2)
    clone = wf.clone()
    responses = {"agent1": str(task["answer"]), "agent2": wrong_of(task), "agent3": "??"}
    wf.act(responses)
    clone.act(dict(responses))
    assert [wf.prompt(r) for r in wf.roles] == [clone.prompt(r) for r in wf.roles]
    assert wf.history == clone.history
    (_, c1, s1), (_, c2, s2), (_, c3, s3) = (wf.history[-1][r] for r in wf.roles)
    assert (c1, c2, c3) == (True, False, False)
    assert 0.5 <= s1 < 1.0 and 0.0 <= s2 < 0.6 and 0.0 <= s3 < 0.6
    d1, d2, d3 = _digits(content(wf.prompt("agent1")))
    assert 5 <= d1 <= 9 and 0 <= d2 <= 5 and 0 <= d3 <= 5
    # A fresh workflow playing the same turn shows the same stand-in scores.
    again = make(task, agents=3, max_turns=2)
    again.act(responses)
    assert again.prompt("agent2") == wf.prompt("agent2")


def test_observed_scores_last_one_turn_only():
  task = task_of(8)
  wf = make(task, agents=2, max_turns=3)
  wf.observe_scores({"agent1": 0.0, "agent2": 0.0})
  wf.act({"agent1": str(task["answer"]), "agent2": str(task["answer"])})
  assert _digits(content(wf.prompt("agent1"))) == [0, 0]
  wf.act({"agent1": str(task["answer"]), "agent2": str(task["answer"])})  # no scores observed
  assert all(5 <= d <= 9 for d in _digits(content(wf.prompt("agent1"))))


# -------------------------------------------------------- scoring prompt, errors, heuristic


def test_scoring_prompt_is_the_question_alone():
  task = task_of(9)
  wf = make(task, agents=2)
  assert content(wf.scoring_prompt("agent1")) == f"S {task['question']}"
  wf.observe_scores({"agent1": 0.9, "agent2": 0.1})
  wf.act({"agent1": str(task["answer"]), "agent2": "3"})
  for role in wf.roles:
    assert content(wf.scoring_prompt(role)) == f"S {task['question']}"
  chat = make(task, agents=2, style="chat")
  first = chat.scoring_prompt("agent1")
  assert task["question"] in all_text(first)
  chat.observe_scores({"agent1": 0.9, "agent2": 0.1})
  chat.act({"agent1": f"<answer>{task['answer']}</answer>", "agent2": "<answer>314</answer>"})
  assert chat.scoring_prompt("agent1") == first == chat.scoring_prompt("agent2")
  assert "314" not in all_text(first) and "0.90" not in all_text(first)


@pytest.mark.parametrize("agents", [0, -1])
def test_no_agents_is_an_error(agents):
  with pytest.raises(ValueError):
    make(task_of(), agents=agents)


@pytest.mark.parametrize("max_turns", [0, -2])
def test_no_turns_is_an_error(max_turns):
  with pytest.raises(ValueError):
    make(task_of(), agents=2, max_turns=max_turns)


def test_heuristic_and_expert_responses():
  task = task_of(10)
  wf = make(task, agents=3)
  assert all(wf.heuristic_response(r) is None for r in wf.roles)
  assert all(wf.expert_response(r) == str(task["answer"]) for r in wf.roles)
  wf.act({"agent1": f" {task['answer']} ", "agent2": "abc", "agent3": "1,234"})
  assert wf.heuristic_response("agent1") == str(task["answer"])
  assert wf.heuristic_response("agent2") is None
  assert wf.heuristic_response("agent3") == "1234"


# -------------------------------------------------------------------------------- chat


NINES = {"question": "Nine bags of nine nuts. Total?", "answer": 81, "expression": "9*9"}


def test_chat_grading_and_prompts():
  wf = make(NINES, agents=2, max_turns=2, style="chat")
  first = wf.prompt("agent1")
  assert first[0]["role"] == "system" and NINES["question"] in user_text(first)
  wf.observe_scores({"agent1": 0.837, "agent2": 0.3})
  result = wf.act({"agent1": "Nine times nine. <answer>81</answer>", "agent2": "81"})
  assert (result.outcomes["agent1"].reward, result.outcomes["agent1"].invalid) == (1.0, False)
  # Without the tag the answer does not count, even when it is the right number.
  assert (result.outcomes["agent2"].reward, result.outcomes["agent2"].invalid) == (0.0, True)
  for role in wf.roles:
    text = user_text(wf.prompt(role))
    assert NINES["question"] in text and "81" in text
    assert "0.84" in text and "0.30" in text
  own = user_text(wf.prompt("agent1"))
  assert own.index("0.84") < own.index("0.30")  # own answer first
  other = user_text(wf.prompt("agent2"))
  assert other.index("0.30") < other.index("0.84")
  assert "0.84" not in user_text(first)
  result = wf.act({"agent1": "<answer>80</answer>", "agent2": "so <answer>\\boxed{81}</answer>"})
  assert result.outcomes["agent1"].reward == 0.0 and not result.outcomes["agent1"].invalid
  assert result.outcomes["agent2"].reward == 1.0 and not result.outcomes["agent2"].invalid
  assert result.team_reward == 0.5 and wf.success


# ----------------------------------------------------------------------------- engine


def test_engine_scores_rows_and_shows_digits_next_turn():
  tasks = [task_of(11), task_of(12)]
  answers = [t["answer"] for t in tasks]
  workflows = [make(t, agents=2, max_turns=2) for t in tasks]
  # Requests go in (task, role) order; agent1 -> policy 0, agent2 -> policy 1.
  plan = {0: [str(answers[0]), str(answers[1]),  # turn 1, agent1: right, right
              "zz", str(answers[1])],  # turn 2, agent1: unparseable, right
          1: ["hmm", str(answers[1] + 3),  # turn 1, agent2: unparseable, wrong
              str(answers[0]), "4.5"]}  # turn 2, agent2: right, wrong
  calls = {0: [], 1: []}

  def sampler(policy):
    queue = list(plan[policy])

    def sample(prompts, key):
      del key
      calls[policy].append([TOK.decode(p) for p in prompts])
      out = []
      for _ in prompts:
        ids = TOK.encode(queue.pop(0)) + [TOK.eos_id]
        out.append(Sample(np.asarray(ids, np.int32), np.zeros(len(ids), np.float32)))
      return out

    return sample

  values = iter([0.125, 0.875, 0.375, 1.0, 0.625, 0.25, 0.5, 0.75])
  received = []

  def scorer(token_lists):
    received.append([list(t) for t in token_lists])
    return np.asarray([next(values) for _ in token_lists], np.float32)

  rollout = collect(workflows, [sampler(0), sampler(1)], TOK, jax.random.key(0),
                    mapping={"agent1": 0, "agent2": 1},
                    config=RolloutConfig(k=1, tree=False), scorer=scorer)
  b = rollout.batch
  # Rows: per iteration, (task, role) order.
  np.testing.assert_array_equal(b.turn_id, [0, 0, 0, 0, 1, 1, 1, 1])
  np.testing.assert_array_equal(b.task_id, [0, 0, 1, 1, 0, 0, 1, 1])
  np.testing.assert_array_equal(b.role_id, [0, 1, 0, 1, 0, 1, 0, 1])
  np.testing.assert_array_equal(b.score, [0.125, 0.875, 0.375, 1.0, 0.625, 0.25, 0.5, 0.75])
  np.testing.assert_array_equal(b.invalid, [0, 1, 0, 0, 1, 0, 0, 0])
  np.testing.assert_array_equal(b.reward, [1, 0, 1, 0, 0, 1, 1, 0])
  np.testing.assert_allclose(b.team_reward, [0, 0, 0, 0, 0.5, 0.5, 0.5, 0.5])
  # The scorer saw the scoring prompt (`S <question>`) then each response with its stop token,
  # once per iteration.
  responses = [plan[0][0], plan[1][0], plan[0][1], plan[1][1],
               plan[0][2], plan[1][2], plan[0][3], plan[1][3]]
  row_tasks = [0, 0, 1, 1, 0, 0, 1, 1]
  expected = [TOK.chat([{"role": "user", "content": f"S {tasks[t]['question']}"}])
              + TOK.encode(r) + [TOK.eos_id] for t, r in zip(row_tasks, responses)]
  assert received == [expected[:4], expected[4:]]
  # Turn 2's prompts show turn 1's answers with the digits of their scores:
  # task 0: agent1 (right) 0.125 -> 1, agent2 ("hmm", shown ?) 0.875 -> 8;
  # task 1: agent1 0.375 -> 3, agent2 1.0 -> 9.
  q0, q1 = tasks[0]["question"], tasks[1]["question"]
  a0, a1 = answers
  assert calls[0][1] == [f"D {q0} Y{a0}:1 O?:8\n>", f"D {q1} Y{a1}:3 O{a1 + 3}:9\n>"]
  assert calls[1][1] == [f"D {q0} Y?:8 O{a0}:1\n>", f"D {q1} Y{a1 + 3}:9 O{a1}:3\n>"]
  assert calls[0][0] == [f"D {q0}\n>", f"D {q1}\n>"]
  # Rows hold the prompt then the response tokens; the response is what was sampled.
  for row, r in enumerate(responses):
    ids = b.tokens[row][b.loss_mask[row] > 0]
    assert list(ids) == TOK.encode(r) + [TOK.eos_id]
  # Success: task 0 ends with 1 of 2 right (success), task 1 with 1 of 2 right (success).
  assert rollout.metrics["rollout/success_rate"] == 1.0
  assert rollout.metrics["rollout/invalid_actions"] == 2.0


def test_without_a_scorer_rows_keep_the_stand_in_scores_shown():
  """No verifier: the rows' scores are the stand-in scores the workflow showed (the digits of
  turn 2's prompts are theirs), in the stand-in's ranges for right and wrong answers."""
  task = task_of(13)
  answer = task["answer"]
  plan = [str(answer), str(answer + 2), str(answer + 2), str(answer)]  # turn 1 a1, a2; turn 2
  prompts_seen = []

  def sample(prompts, key):
    del key
    prompts_seen.append([TOK.decode(p) for p in prompts])
    out = []
    for _ in prompts:
      ids = TOK.encode(plan.pop(0)) + [TOK.eos_id]
      out.append(Sample(np.asarray(ids, np.int32), np.zeros(len(ids), np.float32)))
    return out

  rollout = collect([make(task, agents=2, max_turns=2)], [sample], TOK, jax.random.key(0),
                    mapping={"agent1": 0, "agent2": 0}, config=RolloutConfig(k=1, tree=False))
  b = rollout.batch
  np.testing.assert_array_equal(b.reward, [1, 0, 0, 1])
  right, wrong = b.score[b.reward > 0], b.score[b.reward == 0]
  assert ((right >= 0.5) & (right < 1.0)).all() and ((wrong >= 0.0) & (wrong < 0.6)).all()
  digits = [str(min(9, int(s * 10 + 1e-6))) for s in b.score[:2]]
  q = task["question"]
  assert prompts_seen[1] == [f"D {q} Y{answer}:{digits[0]} O{answer + 2}:{digits[1]}\n>",
                             f"D {q} Y{answer + 2}:{digits[1]} O{answer}:{digits[0]}\n>"]
