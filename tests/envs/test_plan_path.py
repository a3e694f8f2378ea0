"""Plan-Path: BFS against relaxation distances, expert success, fuzzed answers, splits, rewards."""
import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs import grid, plan_path, registry
from marft.rollout.workflow import RoleOutcome
from marft.tokenizers import CharTokenizer

CFG = plan_path.default_config()
STEPS = {"U": (-1, 0), "D": (1, 0), "L": (0, -1), "R": (0, 1)}
ADVERSARIAL = ["", " ", "\n", "rd", "R D", "R,D", "RDX", "RRR", "R" * 10_000, "ＲＤ", "R\x00",
               "\x00", "UD\u200b", "🙂", "Ṙ", "<eos>", "None", "RD\nRD", "\tL\r\n"]


def relaxation_distances(rows, goal):
  """Moves from every free cell to `goal` by Bellman-Ford relaxation (inf if unreachable)."""
  cells = [(r, c) for r in range(len(rows)) for c in range(len(rows[0])) if rows[r][c] != "#"]
  dist = {cell: math.inf for cell in cells}
  dist[goal] = 0
  for _ in cells:
    for r, c in cells:
      for dr, dc in STEPS.values():
        if (r + dr, c + dc) in dist:
          dist[(r, c)] = min(dist[(r, c)], dist[(r + dr, c + dc)] + 1)
  return dist


def walk(rows, start, moves):
  """The cells visited by `moves`, or None if one is blocked."""
  cells = [start]
  for move in moves:
    r, c = cells[-1][0] + STEPS[move][0], cells[-1][1] + STEPS[move][1]
    if not (0 <= r < len(rows) and 0 <= c < len(rows[0])) or rows[r][c] == "#":
      return None
    cells.append((r, c))
  return cells


def test_bfs_matches_relaxation_on_random_grids():
  rng = random.Random(0)
  for _ in range(150):
    h, w = rng.randint(1, 6), rng.randint(1, 6)
    rows = ["".join(rng.choice("..#") for _ in range(w)) for _ in range(h)]
    free = [(r, c) for r in range(h) for c in range(w) if rows[r][c] == "."]
    if len(free) < 2:
      continue
    start, goal = rng.sample(free, 2)
    path = plan_path.shortest_path(rows, start, goal)
    dist = relaxation_distances(rows, goal)[start]
    if dist == math.inf:
      assert path is None
    else:
      assert len(path) == dist and walk(rows, start, path)[-1] == goal


def test_generated_instances_are_solvable_with_the_stated_shortest_path():
  for seed in range(150):
    task = plan_path.generate_task(seed, "train", CFG)
    rows, start, goal = task["grid"], tuple(task["start"]), tuple(task["goal"])
    assert len(rows) == 5 and all(len(row) == 5 and set(row) <= {".", "#"} for row in rows)
    assert rows[start[0]][start[1]] == "." and rows[goal[0]][goal[1]] == "." and start != goal
    assert task["shortest"] == relaxation_distances(rows, goal)[start]
    assert 3 <= task["shortest"] <= 8


def run_expert(task, kind, cfg=CFG):
  wf = plan_path.make_workflow(task, kind, cfg, cfg["max_turns"])
  rewards = []
  while not wf.done:
    for role in wf.acting_roles():
      text = wf.prompt(role)[0]["content"]
      assert len(text) < 80 or cfg["size"] > 5
      assert set(text) <= set(CharTokenizer.CHARS)
    result = wf.act({role: wf.expert_response(role) for role in wf.acting_roles()})
    rewards.append(result)
  return wf, rewards


@pytest.mark.parametrize("kind", ["single", "mas"])
def test_expert_solves_every_instance_optimally(kind):
  for split, seeds in (("train", range(200)), ("test", range(60))):
    for seed in seeds:
      task = plan_path.generate_task(seed, split, CFG)
      wf, results = run_expert(task, kind)
      assert wf.success and not wf.failed
      assert wf.turn == math.ceil(task["shortest"] / 2) <= CFG["max_turns"]
      last = results[-1]
      applied = "agent" if kind == "single" else "plan"
      # The last answer reaches the goal: one or two moves, +1 and the optimal bonus.
      assert last.outcomes[applied].reward in (pytest.approx(1.49), pytest.approx(1.48))
      assert last.team_reward == last.outcomes[applied].reward


def test_expert_on_paper_scale_grids():
  cfg = {**CFG, "size": 10, "min_path": 6, "max_path": 18, "max_turns": 11}
  for seed in range(20):
    wf, _ = run_expert(plan_path.generate_task(seed, "train", cfg), "mas", cfg)
    assert wf.success


def test_splits_are_disjoint_and_deterministic():
  def key(task):
    return json.dumps(task, sort_keys=True)
  train = {key(plan_path.generate_task(s, "train", CFG)) for s in range(300)}
  test = {key(plan_path.generate_task(s, "test", CFG)) for s in range(300)}
  assert not train & test
  assert len(train) > 250 and len(test) > 250
  task = plan_path.generate_task(7, "test", CFG)
  assert json.loads(json.dumps(task)) == task == plan_path.generate_task(7, "test", CFG)
  assert plan_path.generate_task(7, "test", {**CFG, "size": 6})["grid"] != task["grid"]
  assert registry.get_task("plan_path") is plan_path


HAND = {"grid": ["...", ".#.", "..."], "start": [0, 0], "goal": [2, 2], "shortest": 4}
HAND_CFG = {"max_moves_per_turn": 2}


def play(wf, *answers):
  return [wf.act({wf.acting_roles()[0]: a}) for a in answers]


def test_rewards_on_a_hand_computed_example():
  wf = plan_path.make_workflow(HAND, "single", HAND_CFG, max_turns=3)
  assert wf.prompt("agent") == [{"role": "user", "content": "S../.#./..G"}]
  r1, r2, r3 = play(wf, "RR", "DL", " D\n")
  assert r1.outcomes == {"agent": RoleOutcome(-0.02, False)}
  assert r2.outcomes["agent"].reward == pytest.approx(-0.01 - 0.1)  # L runs into the '#'
  assert wf.pos == (2, 2) and wf.success and wf.done
  assert r3.outcomes["agent"].reward == pytest.approx(-0.01 + 1.0)  # 5 moves made, shortest 4
  assert r3.team_reward == r3.outcomes["agent"].reward

  wf = plan_path.make_workflow(HAND, "single", HAND_CFG, max_turns=3)
  assert [r.outcomes["agent"].reward for r in play(wf, "DD", "RR")] == pytest.approx(
      [-0.02, -0.02 + 1.0 + 0.5])

  wf = plan_path.make_workflow({**HAND, "start": [2, 1], "shortest": 1}, "single", HAND_CFG, 3)
  (r,) = play(wf, "RL")  # the goal ends the answer: L is ignored
  assert r.outcomes["agent"].reward == pytest.approx(-0.01 + 1.0 + 0.5) and wf.pos == (2, 2)

  wf = plan_path.make_workflow(HAND, "single", HAND_CFG, max_turns=2)
  r1, r2 = play(wf, "U", "xyz")
  assert r1.outcomes["agent"] == RoleOutcome(pytest.approx(-0.1), False)
  assert r2.outcomes["agent"].invalid and r2.outcomes["agent"].reward == pytest.approx(-0.1 - 1.0)
  assert wf.done and not wf.success and wf.pos == (0, 0)


def test_mas_tool_proposal_is_simulated_on_a_copy():
  wf = plan_path.make_workflow(HAND, "mas", HAND_CFG, max_turns=3)
  assert wf.roles == ("tool", "plan") and wf.stages() == (("tool",), ("plan",))
  assert wf.prompt("tool")[0]["content"] == "T S../.#./..G"
  (r,) = play(wf, "RR")
  assert r.outcomes == {"tool": RoleOutcome(pytest.approx(-0.02), False)}
  assert r.team_reward == 0.0 and wf.pos == (0, 0)
  assert wf.prompt("plan")[0]["content"] == "P S../.#./..G RR:ok"
  (r,) = play(wf, "D")
  assert r.outcomes == {"plan": RoleOutcome(pytest.approx(-0.01), False)}
  assert r.team_reward == pytest.approx(-0.01) and wf.pos == (1, 0)
  (tool,) = play(wf, "hello")
  assert tool.outcomes == {"tool": RoleOutcome(pytest.approx(-0.1), True)}
  assert wf.prompt("plan")[0]["content"] == "P .../S#./..G ?:invalid"
  (r,) = play(wf, "RR")
  assert r.outcomes == {"plan": RoleOutcome(pytest.approx(-0.2), False)} and wf.pos == (1, 0)
  (tool,) = play(wf, "RR")  # last turn: a proposal that misses the goal includes the failure
  assert tool.outcomes["tool"].reward == pytest.approx(-0.2 - 1.0)
  assert wf.prompt("plan")[0]["content"] == "P .../S#./..G RR:blocked"
  (r,) = play(wf, "DR")
  assert r.outcomes["plan"].reward == pytest.approx(-0.02 - 1.0) == r.team_reward
  assert wf.done and not wf.success and wf.pos == (2, 1)


def test_unknown_kind_is_an_error():
  with pytest.raises(ValueError):
    plan_path.make_workflow(HAND, "debate", HAND_CFG, 3)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet="UDLRudlr \n\t", max_size=5),
                 st.sampled_from(ADVERSARIAL)))
def test_any_answer_is_a_move_string_or_an_invalid_action(text):
  moves = grid.parse_moves(text, 2)
  assert moves is None or (1 <= len(moves) <= 2 and set(moves) <= set("UDLR")
                           and moves == text.strip())
  task = plan_path.generate_task(3, "train", CFG)
  for kind in ("single", "mas"):
    wf = plan_path.make_workflow(task, kind, CFG, CFG["max_turns"])
    while not wf.done:
      roles = wf.acting_roles()
      result = wf.act({role: text for role in roles})
      assert set(result.outcomes) == set(roles)
      (outcome,) = result.outcomes.values()
      assert outcome.invalid == (moves is None)
      if moves is None:
        assert outcome.reward in (pytest.approx(-0.1), pytest.approx(-1.1))


def expected_reward(task, pos, made, moves, final):
  """The reward of `moves` from `pos` after `made` moves, recomputed from the rules."""
  rows, goal = task["grid"], tuple(task["goal"])
  reward = 0.0
  for move in moves:
    if pos == goal:
      break
    made += 1
    cells = walk(rows, pos, move)
    if cells is None:
      reward -= 0.1
    else:
      pos = cells[-1]
      reward -= 0.01
      if pos == goal:
        reward += 1.0 + (0.5 if made == task["shortest"] else 0.0)
  if pos != goal and final:
    reward -= 1.0
  return reward, pos


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000), st.lists(st.text(alphabet="UDLR", min_size=1, max_size=2),
                                        min_size=1, max_size=6))
def test_rewards_match_the_rules_and_tool_matches_plan(seed, answers):
  task = plan_path.generate_task(seed, "train", CFG)
  wf = plan_path.make_workflow(task, "mas", CFG, CFG["max_turns"])
  made = 0
  for answer in answers:
    if wf.done:
      break
    final = wf.turn == wf.max_turns - 1
    want, pos = expected_reward(task, wf.pos, made, answer, final)
    tool = wf.act({"tool": answer}).outcomes["tool"].reward
    plan = wf.act({"plan": answer})
    assert tool == pytest.approx(want) and plan.outcomes["plan"].reward == pytest.approx(want)
    assert plan.team_reward == pytest.approx(want) and wf.pos == pos
    made = wf.moves_made


WALL = {"grid": [".#.", ".#.", "..."], "start": [0, 0], "goal": [0, 2], "shortest": 6}


@pytest.mark.parametrize("potential, first_move_shaping", [("bfs", 1.0), ("manhattan", -1.0)])
def test_shaping_rewards_progress_by_the_chosen_distance(potential, first_move_shaping):
  # Around the wall the true distance from (0,0) is 6 (D D R R U U); Manhattan says 2, so the
  # first move D is progress for "bfs" (6 -> 5) and a step away for "manhattan" (2 -> 3).
  cfg = {"max_moves_per_turn": 2, "shaping": 2.0, "potential": potential}
  wf = plan_path.make_workflow(WALL, "single", cfg, max_turns=4)
  (r,) = play(wf, "D")
  assert r.outcomes["agent"].reward == pytest.approx(-0.01 + 2.0 * first_move_shaping)
  (r,) = play(wf, "R")  # blocked: no move made, no shaping
  assert r.outcomes["agent"].reward == pytest.approx(-0.1)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10_000), st.lists(st.text(alphabet="UDLR", min_size=1, max_size=2),
                                        min_size=1, max_size=6), st.floats(0.1, 3.0))
def test_shaping_telescopes_to_lambda_times_the_distance_covered(seed, answers, lam):
  task = plan_path.generate_task(seed, "train", CFG)
  dist = relaxation_distances(task["grid"], tuple(task["goal"]))
  plain = plan_path.make_workflow(task, "single", CFG, CFG["max_turns"])
  shaped = plan_path.make_workflow(task, "single", {**CFG, "shaping": lam}, CFG["max_turns"])
  difference = 0.0
  for answer in answers:
    if plain.done:
      break
    difference += (shaped.act({"agent": answer}).outcomes["agent"].reward
                   - plain.act({"agent": answer}).outcomes["agent"].reward)
  assert shaped.pos == plain.pos
  start = tuple(task["start"])
  assert difference == pytest.approx(lam * (dist[start] - dist[plain.pos]), abs=1e-9)


def test_unknown_potential_is_an_error():
  with pytest.raises(ValueError, match="potential"):
    plan_path.make_workflow(HAND, "single", {"shaping": 1.0, "potential": "euclid"}, 3)


def test_heuristic_walks_straight_at_the_goal_blind_to_walls():
  wf = plan_path.make_workflow(WALL, "mas", {"max_moves_per_turn": 2}, max_turns=4)
  assert wf.heuristic_response("tool") == "RR"  # straight through the '#'
  wf = plan_path.make_workflow({**HAND, "start": [2, 0], "goal": [0, 1]}, "single",
                               {"max_moves_per_turn": 3}, max_turns=4)
  assert wf.heuristic_response("agent") == "UUR"  # rows first
