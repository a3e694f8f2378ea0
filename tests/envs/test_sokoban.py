"""Sokoban: the solver and deadlock check against value iteration, expert success, fuzzed answers,
splits, rewards."""
import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs import registry, sokoban
from marft.rollout.workflow import RoleOutcome
from marft.tokenizers import CharTokenizer

CFG = sokoban.default_config()
STEPS = {"U": (-1, 0), "D": (1, 0), "L": (0, -1), "R": (0, 1)}
ADVERSARIAL = ["", " ", "\n", "rr", "R R", "R,R", "RRX", "RRR", "U" * 10_000, "ＲＲ", "R\x00",
               "🙂", "<eos>", "None", "RR\nRR", "\tL\r\n", "$@#"]


def move(room, player, box, m):
  """One move by the rules, written out again: (player, box), or None if blocked."""
  def free(r, c):
    return 0 <= r < len(room) and 0 <= c < len(room[0]) and room[r][c] != "#"
  dr, dc = STEPS[m]
  p = (player[0] + dr, player[1] + dc)
  if not free(*p):
    return None
  if p != box:
    return p, box
  b = (box[0] + dr, box[1] + dc)
  return (p, b) if free(*b) else None


def value_iteration(room, target):
  """Moves to solve from every (player, box) state, by relaxation to a fixed point."""
  free = [(r, c) for r in range(len(room)) for c in range(len(room[0])) if room[r][c] != "#"]
  states = [(p, b) for p in free for b in free if p != b]
  dist = {s: 0 if s[1] == target else math.inf for s in states}
  changed = True
  while changed:
    changed = False
    for s in states:
      if s[1] == target:
        continue
      best = min((dist[n] + 1 for m in STEPS if (n := move(room, *s, m)) is not None),
                 default=math.inf)
      if best < dist[s]:
        dist[s], changed = best, True
  return dist


def replay(room, player, box, moves):
  for m in moves:
    player, box = move(room, player, box, m)
  return player, box


def test_solver_matches_value_iteration_on_random_rooms():
  rng = random.Random(0)
  for _ in range(40):
    h, w = rng.randint(2, 5), rng.randint(2, 5)
    room = ["".join(rng.choice("___#") for _ in range(w)) for _ in range(h)]
    free = [(r, c) for r in range(h) for c in range(w) if room[r][c] == "_"]
    if len(free) < 3:
      continue
    target = rng.choice(free)
    dist = value_iteration(room, target)
    for (player, box) in rng.sample(sorted(dist), min(len(dist), 15)):
      solution = sokoban.solve(room, (player, box), target)
      if dist[(player, box)] == math.inf:
        assert solution is None
      else:
        assert len(solution) == dist[(player, box)]
        assert replay(room, player, box, solution)[1] == target


def test_generated_instances_are_solvable_in_the_stated_moves():
  for seed in range(40):
    task = sokoban.generate_task(seed, "train", CFG)
    room, target = task["room"], tuple(task["target"])
    player, box = tuple(task["player"]), tuple(task["box"])
    assert len(room) == 5 and all(len(row) == 5 and set(row) <= {"_", "#"} for row in room)
    assert sum(row.count("#") for row in room) <= 3
    assert len({player, box, target}) == 3
    assert all(room[r][c] == "_" for r, c in (player, box, target))
    assert len(task["solution"]) == value_iteration(room, target)[(player, box)]
    assert 3 <= len(task["solution"]) <= 8
    assert replay(room, player, box, task["solution"])[1] == target


@pytest.mark.parametrize("kind", ["single", "mas"])
def test_expert_solves_every_instance(kind):
  for split, seeds in (("train", range(150)), ("test", range(50))):
    for seed in seeds:
      task = sokoban.generate_task(seed, split, CFG)
      wf = sokoban.make_workflow(task, kind, CFG, CFG["max_turns"])
      total = 0.0
      while not wf.done:
        for role in wf.acting_roles():
          text = wf.prompt(role)[0]["content"]
          assert len(text) < 80 and set(text) <= set(CharTokenizer.CHARS)
        result = wf.act({role: wf.expert_response(role) for role in wf.acting_roles()})
        total += result.team_reward
      assert wf.success and not wf.failed
      assert wf.turn == math.ceil(len(task["solution"]) / 2) <= CFG["max_turns"]
      assert total == 11.0  # box onto the target + solved, nothing else


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10_000), st.lists(st.sampled_from("UDLR"), max_size=30))
def test_stuck_is_exactly_unsolvable(seed, moves):
  task = sokoban.generate_task(seed, "train", CFG)
  room, target = task["room"], tuple(task["target"])
  dist = value_iteration(room, target)
  wf = sokoban.make_workflow(task, "single", CFG, max_turns=100)
  for m in moves:
    if wf.done:
      break
    wf.act({"agent": m})
    assert wf.failed == (dist[wf.state] == math.inf)
    assert wf.success == (wf.state[1] == target)


def test_splits_are_disjoint_and_deterministic():
  def key(task):
    return json.dumps(task, sort_keys=True)
  train = {key(sokoban.generate_task(s, "train", CFG)) for s in range(200)}
  test = {key(sokoban.generate_task(s, "test", CFG)) for s in range(200)}
  assert not train & test
  assert len(train) > 190 and len(test) > 190
  task = sokoban.generate_task(5, "test", CFG)
  assert json.loads(json.dumps(task)) == task == sokoban.generate_task(5, "test", CFG)
  assert sokoban.generate_task(5, "test", {**CFG, "size": 6})["room"] != task["room"]
  assert registry.get_task("sokoban") is sokoban


HAND = {"room": ["____", "____", "____"], "player": [1, 0], "box": [1, 1], "target": [1, 3],
        "solution": "RR"}
HAND_CFG = {"max_moves_per_turn": 2}


def play(wf, *answers):
  return [wf.act({wf.acting_roles()[0]: a}) for a in answers]


def test_rewards_on_a_hand_computed_example():
  wf = sokoban.make_workflow(HAND, "single", HAND_CFG, max_turns=3)
  assert wf.prompt("agent") == [{"role": "user", "content": "____/@$_./____"}]
  r1, r2 = play(wf, "L", "RR")
  assert r1.outcomes == {"agent": RoleOutcome(pytest.approx(-0.1), False)}  # off the room
  assert r2.outcomes == {"agent": RoleOutcome(11.0, False)} and r2.team_reward == 11.0
  assert wf.success and wf.done and wf.render() == "____/__@*/____"

  wf = sokoban.make_workflow(HAND, "single", HAND_CFG, max_turns=3)
  (r1,) = play(wf, "DR")
  assert r1.outcomes["agent"].reward == 0.0 and not wf.done
  (r2,) = play(wf, "U")  # pushes the box against the top wall: it can never come down again
  assert r2.outcomes["agent"].reward == -5.0 and wf.failed and wf.done and not wf.success
  assert wf.render() == "_$__/_@_./____"

  wf = sokoban.make_workflow({**HAND, "room": ["____", "__#_", "____"]}, "single", HAND_CFG, 2)
  r1, r2 = play(wf, "R", "?")  # the box cannot go into the wall; then an unparseable answer
  assert r1.outcomes["agent"] == RoleOutcome(pytest.approx(-0.1), False)
  assert r2.outcomes["agent"] == RoleOutcome(pytest.approx(-0.1 - 5.0), True)
  assert wf.done and not wf.success and not wf.failed

  wf = sokoban.make_workflow({**HAND, "player": [1, 3], "box": [1, 2], "target": [1, 3]},
                             "single", HAND_CFG, 2)
  assert wf.render() == "____/__$+/____"


def test_mas_tool_proposal_is_simulated_on_a_copy():
  wf = sokoban.make_workflow(HAND, "mas", HAND_CFG, max_turns=2)
  assert wf.prompt("tool")[0]["content"] == "T ____/@$_./____"
  (tool,) = play(wf, "RR")
  assert tool.outcomes == {"tool": RoleOutcome(11.0, False)} and tool.team_reward == 0.0
  assert wf.prompt("plan")[0]["content"] == "P ____/@$_./____ RR:solved" and not wf.success
  (plan,) = play(wf, "R")
  assert plan.outcomes == {"plan": RoleOutcome(0.0, False)} and wf.state == ((1, 1), (1, 2))
  (tool,) = play(wf, "UR")  # last turn: a proposal that does not solve includes the failure
  assert tool.outcomes["tool"].reward == -5.0
  assert wf.prompt("plan")[0]["content"] == "P ____/_@$./____ UR:ok"
  (plan,) = play(wf, "")
  assert plan.outcomes == {"plan": RoleOutcome(pytest.approx(-0.1 - 5.0), True)}
  assert plan.team_reward == pytest.approx(-5.1) and wf.done and not wf.success

  wf = sokoban.make_workflow(HAND, "mas", HAND_CFG, max_turns=3)
  play(wf, "DR", "DR")
  (tool,) = play(wf, "U")
  assert tool.outcomes["tool"].reward == -5.0 and not wf.failed and wf.state == ((2, 1), (1, 1))
  assert wf.prompt("plan")[0]["content"] == "P ____/_$_./_@__ U:stuck"
  play(wf, "L")
  (tool,) = play(wf, "LL")
  assert tool.outcomes["tool"].reward == pytest.approx(-0.2 - 5.0)  # last turn: failure too
  assert wf.prompt("plan")[0]["content"] == "P ____/_$_./@___ LL:blocked"


def test_unknown_kind_is_an_error():
  with pytest.raises(ValueError):
    sokoban.make_workflow(HAND, "chain", HAND_CFG, 2)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet="UDLRudlr \n\t", max_size=5),
                 st.sampled_from(ADVERSARIAL)))
def test_any_answer_is_a_move_string_or_an_invalid_action(text):
  valid = text.strip() != "" and len(text.strip()) <= 2 and set(text.strip()) <= set("UDLR")
  task = sokoban.generate_task(3, "train", CFG)
  for kind in ("single", "mas"):
    wf = sokoban.make_workflow(task, kind, CFG, CFG["max_turns"])
    while not wf.done:
      roles = wf.acting_roles()
      result = wf.act({role: text for role in roles})
      assert set(result.outcomes) == set(roles)
      (outcome,) = result.outcomes.values()
      assert outcome.invalid == (not valid)
      if not valid:
        assert outcome.reward in (pytest.approx(-0.1), pytest.approx(-5.1))


def expected_reward(task, dist, state, moves, final):
  """The reward of `moves` from `state`, recomputed from the rules and value iteration."""
  room, target = task["room"], tuple(task["target"])
  reward = 0.0
  for m in moves:
    if state[1] == target or dist[state] == math.inf:
      break
    nxt = move(room, *state, m)
    if nxt is None:
      reward -= 0.1
      continue
    state = nxt
    if state[1] == target:
      reward += 11.0
  if state[1] != target and (final or dist[state] == math.inf):
    reward -= 5.0
  return reward, state


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10_000), st.lists(st.text(alphabet="UDLR", min_size=1, max_size=2),
                                        min_size=1, max_size=6))
def test_rewards_match_the_rules_and_tool_matches_plan(seed, answers):
  task = sokoban.generate_task(seed, "train", CFG)
  dist = value_iteration(task["room"], tuple(task["target"]))
  wf = sokoban.make_workflow(task, "mas", CFG, CFG["max_turns"])
  for answer in answers:
    if wf.done:
      break
    want, state = expected_reward(task, dist, wf.state, answer, wf.turn == wf.max_turns - 1)
    tool = wf.act({"tool": answer}).outcomes["tool"].reward
    plan = wf.act({"plan": answer})
    assert tool == pytest.approx(want) and plan.outcomes["plan"].reward == pytest.approx(want)
    assert plan.team_reward == pytest.approx(want) and wf.state == state
