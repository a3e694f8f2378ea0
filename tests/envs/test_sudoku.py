"""4x4 Sudoku: generator and solver against brute force, expert demonstrations, rewards by hand,
parser fuzzing, splits and determinism."""
import hashlib
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs import registry, sudoku
from marft.rollout.workflow import RoleOutcome

CFG = sudoku.default_config()
# Solution rows 1234 / 3412 / 2143 / 4321.
SOLUTION = "1234341221434321"
# Blanks at (1,1), (2,2), (4,4): each forced by its row (1, 4, 1).
FORCED = {"puzzle": "0234301221434320", "solution": SOLUTION}
# Blanks at (1,1), (1,2), (3,1): (1,1) may legally take 2 now, but the solution has 1 there.
TRAP = {"puzzle": "0034341201434321", "solution": SOLUTION}


def units_ok(grid: str) -> bool:
  """No digit repeats in a row, column or 2x2 box (blanks "0" ignored)."""
  rows = [[grid[4 * r + c] for c in range(4)] for r in range(4)]
  cols = [[grid[4 * r + c] for r in range(4)] for c in range(4)]
  boxes = [[grid[4 * (br + r) + bc + c] for r in range(2) for c in range(2)]
           for br in (0, 2) for bc in (0, 2)]
  for unit in rows + cols + boxes:
    digits = [d for d in unit if d != "0"]
    if len(digits) != len(set(digits)):
      return False
  return True


def brute_force_grids() -> set[str]:
  """Every valid complete grid: all choices of four row permutations, filtered."""
  grids = set()
  perms = ["".join(p) for p in itertools.permutations("1234")]
  for top in itertools.product(perms, repeat=2):
    if not units_ok("".join(top) + "0" * 8):
      continue
    for bottom in itertools.product(perms, repeat=2):
      if units_ok("".join(top + bottom)):
        grids.add("".join(top + bottom))
  return grids


GRIDS = brute_force_grids()


def completions(puzzle: str) -> list[str]:
  return [g for g in GRIDS if all(p in ("0", q) for p, q in zip(puzzle, g))]


def play(task, kind, responses, cfg=CFG, max_turns=None):
  """Acts `responses` (one dict per stage) and returns the StageResults."""
  wf = sudoku.make_workflow(task, kind, cfg, max_turns or cfg["max_turns"])
  results = [wf.act(r) for r in responses]
  return wf, results


def test_registry_and_module_interface():
  assert registry.get_task("sudoku") is sudoku
  assert sudoku.NAME == "sudoku"
  assert set(sudoku.default_config()) >= {"max_turns", "min_blanks", "max_blanks"}


def test_solver_and_complete_grids_match_brute_force():
  assert len(GRIDS) == 288
  assert set(sudoku.complete_grids()) == GRIDS
  rng = random.Random(0)
  for _ in range(300):  # random puzzles, unique or not
    grid = rng.choice(sorted(GRIDS))
    puzzle = "".join("0" if rng.random() < 0.6 else d for d in grid)
    expected = sorted(completions(puzzle))
    assert sorted(sudoku.solve(puzzle, limit=None)) == expected
    assert len(sudoku.solve(puzzle)) == min(2, len(expected))


def test_conflicts_matches_unit_check():
  rng = random.Random(1)
  for _ in range(200):
    puzzle = sudoku.generate_task(rng.randrange(10**6), "train", CFG)["puzzle"]
    for cell in range(16):
      if puzzle[cell] == "0":
        for d in "1234":
          filled = puzzle[:cell] + d + puzzle[cell + 1:]
          assert sudoku.conflicts(puzzle, cell, d) == (not units_ok(filled))


@pytest.mark.parametrize("split", ["train", "test"])
def test_generated_puzzles_are_unique_and_in_range(split):
  for seed in range(300):
    task = sudoku.generate_task(seed, split, CFG)
    puzzle, solution = task["puzzle"], task["solution"]
    assert CFG["min_blanks"] <= puzzle.count("0") <= CFG["max_blanks"]
    assert completions(puzzle) == [solution]


def test_splits_are_disjoint_and_follow_the_hash():
  train = {sudoku.generate_task(s, "train", CFG)["puzzle"] for s in range(300)}
  test = {sudoku.generate_task(s, "test", CFG)["puzzle"] for s in range(300)}
  assert len(train) > 250 and len(test) > 250
  assert not train & test
  for puzzle in test:
    assert int(hashlib.sha256(puzzle.encode()).hexdigest(), 16) % 10 == 0
  for puzzle in train:
    assert int(hashlib.sha256(puzzle.encode()).hexdigest(), 16) % 10 != 0


def test_generation_is_deterministic_and_config_dependent():
  assert [sudoku.generate_task(s, "train", CFG) for s in range(20)] == [
      sudoku.generate_task(s, "train", dict(CFG)) for s in range(20)]
  assert len({sudoku.generate_task(s, "train", CFG)["puzzle"] for s in range(20)}) == 20
  hardest = dict(CFG, min_blanks=12, max_blanks=12)
  for s in range(20):
    task = sudoku.generate_task(s, "train", hardest)
    assert task["puzzle"].count("0") == 12 and completions(task["puzzle"]) == [task["solution"]]
  with pytest.raises(ValueError, match="max_blanks"):
    sudoku.generate_task(0, "train", dict(CFG, max_blanks=13))


@pytest.mark.parametrize("kind", ["single", "mas"])
@pytest.mark.parametrize("cfg", [CFG, dict(CFG, min_blanks=8, max_blanks=10, max_turns=10)])
def test_expert_solves_every_instance(kind, cfg):
  for seed in range(150):
    task = sudoku.generate_task(seed, "test" if seed % 3 else "train", cfg)
    wf = sudoku.make_workflow(task, kind, cfg, cfg["max_turns"])
    total = 0.0
    while not wf.done:
      result = wf.act({r: wf.expert_response(r) for r in wf.acting_roles()})
      total += result.team_reward
    assert wf.success and not wf.failed
    assert wf.turn == task["puzzle"].count("0")
    assert total == pytest.approx(0.1 * (wf.turn - 1) + 2.0)


def test_single_rewards_by_hand():
  wf, results = play(FORCED, "single", [
      {"agent": "abc"},  # unparseable
      {"agent": "112"},  # row 1 already has a 2
      {"agent": "122"},  # (1,2) is filled
      {"agent": "111"},
      {"agent": "2 2 4"},
      {"agent": "441"},
  ])
  assert [(r.outcomes["agent"].reward, r.outcomes["agent"].invalid) for r in results] == [
      (-0.5, True), (-0.5, False), (-0.5, False), (0.1, False), (0.1, False), (2.0, False)]
  assert [r.team_reward for r in results] == [-0.5, -0.5, -0.5, 0.1, 0.1, 2.0]
  assert wf.success and wf.done and wf.turn == 6
  assert wf.grid == SOLUTION


def test_prompts_render_the_grid():
  wf = sudoku.make_workflow(FORCED, "single", CFG, 8)
  assert wf.prompt("agent") == [{"role": "user", "content": ".234/3.12/2143/432."}]
  wf.act({"agent": "111"})
  assert wf.prompt("agent")[0]["content"] == "1234/3.12/2143/432."


def test_legal_but_wrong_fill_fails_the_episode():
  wf, (result,) = play(TRAP, "single", [{"agent": "112"}])
  assert result.outcomes["agent"].reward == 0.0
  assert wf.failed and wf.done and not wf.success
  cfg = dict(CFG, reward_fail=-1.0)
  wf, (result,) = play(TRAP, "single", [{"agent": "112"}], cfg)
  assert result.outcomes["agent"].reward == -1.0 and result.team_reward == -1.0


def test_failure_penalty_at_the_turn_limit():
  cfg = dict(CFG, reward_fail=-1.0)
  wf, results = play(FORCED, "single", [{"agent": "111"}, {"agent": "zz"}], cfg, max_turns=2)
  assert [r.outcomes["agent"].reward for r in results] == [0.1, -1.5]
  assert wf.done and not wf.success
  wf, results = play(FORCED, "mas", [{"tool": "224"}, {"plan": "111"}], cfg, max_turns=1)
  assert results[0].outcomes["tool"].reward == pytest.approx(0.1 - 1.0)
  assert results[1].outcomes["plan"].reward == pytest.approx(0.1 - 1.0)
  assert wf.done and not wf.success


def test_mas_tool_proposal_is_checked_on_a_copy():
  wf = sudoku.make_workflow(FORCED, "mas", CFG, 8)
  assert wf.stages() == (("tool",), ("plan",)) and wf.roles == ("tool", "plan")
  assert wf.prompt("tool")[0]["content"] == "T .234/3.12/2143/432."
  result = wf.act({"tool": "112"})
  assert result.outcomes == {"tool": RoleOutcome(-0.5, False)} and result.team_reward == 0
  assert wf.grid == FORCED["puzzle"]
  assert wf.prompt("plan")[0]["content"] == "P .234/3.12/2143/432. 112:conflict"
  assert wf.expert_response("plan") == "111"  # the proposal is wrong: the expert's own fill
  result = wf.act({"plan": "224"})
  assert result.outcomes == {"plan": RoleOutcome(0.1, False)} and result.team_reward == 0.1
  assert wf.turn == 1 and wf.stage == 0

  result = wf.act({"tool": "441"})
  assert result.outcomes["tool"].reward == 0.1 and result.team_reward == 0
  assert wf.prompt("plan")[0]["content"] == "P .234/3412/2143/432. 441:ok"
  assert wf.expert_response("plan") == "441"  # a correct proposal is repeated
  wf.act({"plan": "\U0001F600"})
  assert wf.grid == "0234341221434320"

  wf.act({"tool": ""})
  assert wf.prompt("plan")[0]["content"] == "P .234/3412/2143/432. ?:invalid"
  wf.act({"plan": "441"})
  result = wf.act({"tool": "111"})
  assert result.outcomes["tool"].reward == 2.0
  assert wf.prompt("plan")[0]["content"] == "P .234/3412/2143/4321 111:solved"
  result = wf.act({"plan": "111"})
  assert result.outcomes["plan"].reward == 2.0 and result.team_reward == 2.0
  assert wf.success and wf.done and wf.turn == 4


def test_several_fills_apply_all_or_none():
  cfg = dict(CFG, max_fills=3)
  wf, results = play(FORCED, "single", [{"agent": "111 111"}, {"agent": "111,224"},
                                        {"agent": "441;111"}], cfg)
  assert [r.outcomes["agent"].reward for r in results] == [-0.5, pytest.approx(0.2), -0.5]
  assert wf.grid == "1234341221434320"
  wf, (result,) = play(FORCED, "single", [{"agent": "111224441"}], cfg)
  assert result.outcomes["agent"].reward == 2.0 and wf.success
  wf, (result,) = play(FORCED, "single", [{"agent": "111224"}])  # max_fills 1
  assert result.outcomes["agent"] == RoleOutcome(-0.5, True)


@pytest.mark.parametrize("text, expected", [
    ("234", [(6, "4")]), (" 23 4\n", [(6, "4")]), ("111,442", [(0, "1"), (15, "2")]),
    ("", None), ("23", None), ("2345", None), ("034", None), ("254", None), ("235", None),
    ("-234", None), ("２３４", None), ("٢٣٤", None), ("1" * 10**5, None), ("234\x00", None),
    ("111,224,333", None),
])
def test_parse_fills_cases(text, expected):
  assert sudoku.parse_fills(text, max_fills=2) == expected


ADVERSARIAL = ["", " ", "\n", "\x00", "1" * 10**6, "２３４", "²³⁴", "234" * 40, "None", "{}",
               "__import__('os')", "\U0001F600" * 100, "2\u200b34", "r2c3=4"]


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=40), st.text(alphabet="01234 ,;\n5", max_size=20),
                 st.sampled_from(ADVERSARIAL)))
def test_fuzzed_answers_never_raise(text):
  fills = sudoku.parse_fills(text, 2)
  assert fills is None or (1 <= len(fills) <= 2 and all(
      0 <= cell < 16 and d in "1234" for cell, d in fills))
  for kind in ("single", "mas"):
    wf = sudoku.make_workflow(FORCED, kind, CFG, 2)
    while not wf.done:
      acting = wf.acting_roles()
      result = wf.act({role: text for role in acting})
      assert set(result.outcomes) == set(acting)
      for outcome in result.outcomes.values():
        assert outcome.reward in (-0.5, 0.0, 0.1, 2.0) or outcome.reward == pytest.approx(0.2)
      for role in wf.roles:
        assert len(wf.prompt(role)[0]["content"]) < 80
