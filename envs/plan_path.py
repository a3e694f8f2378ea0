"""Plan-Path: walk from the start to the goal of a grid with blocked cells, in few moves.

After the AT-GRPO paper's ("Stronger Together") task table (the paper uses 10x10 grids with 22% blocked; the tiny
default here is 5x5, `size` and `blocked` configurable). Instances are random grids with a
start and a goal whose BFS shortest path has `min_path` to `max_path` moves (so always
solvable, and solvable by the expert within `max_turns`).

Rendering: rows joined by `/`, `S` the current position, `G` the goal, `#` blocked, `.` free,
e.g. `S.#../.#.../...#./..#../...G.`.

Workflows (closed loop; `envs.grid.MoveWorkflow`): each turn the acting role answers 1 to
`max_moves_per_turn` moves (`U D L R`, e.g. `RD`).
- single: `agent` sees `<grid>` and answers the moves that are applied.
- mas: `tool` sees `T <grid>` and proposes moves, simulated on a copy; `plan` sees
  `P <grid> <moves>:<outcome>` (outcome `goal`, `blocked`, `ok`, or `?:invalid`) and answers
  the moves that are applied.

Rewards (the reference's turn rewards, per answer): -0.01 per move made, -0.1 per blocked move
(off the grid or into `#`; the position stays) and -0.1 for an unparseable answer, +1 on reaching
the goal (moves after it are ignored) and +0.5 more if the moves made so far (blocked ones
included) equal the shortest path length, -1 when the last turn ends without reaching the goal.
Local rewards: tool = what its proposal would have earned if applied; plan and agent = the applied
answer's reward, which is also the team reward.

Heuristic (`heuristic_response`, mixed into base-model demonstrations): the myopic planner that
walks straight at the goal, rows first, blind to `#` — it bumps into walls and never detours.

Optional potential-based shaping (`shaping` = lambda > 0; the reference environment's
`step_single` adds it with lambda 1): each move that is made adds `lambda * (d(before) - d(after))`,
d the distance to the goal (`potential="bfs"`: true shortest-path moves around `#`;
`"manhattan"`: the reference's |dr| + |dc|). A move toward the goal earns +lambda, one away
-lambda; summed over an episode it telescopes to lambda * d(start), so it leaves the ranking of
complete episodes unchanged (Ng et al., 1999) while giving each turn's group a signal of progress.
"""
from __future__ import annotations

import random

from envs import chat, grid
from envs.splits import split_of
from envs.grid import Cell

NAME = "plan_path"
PROMPT_STYLES = chat.PROMPT_STYLES

STEP_REWARD = -0.01
INVALID_REWARD = -0.1
GOAL_REWARD = 1.0
OPTIMAL_BONUS = 0.5
FAIL_REWARD = -1.0


def default_config() -> dict:
  """Tiny defaults: 5x5, 22% blocked, shortest paths of 3-8 moves, 2 moves a turn, 6 turns."""
  return {"size": 5, "blocked": 0.22, "min_path": 3, "max_path": 8, "max_moves_per_turn": 2,
          "max_turns": 6, "shaping": 0.0, "potential": "bfs"}


def _free(rows: list[str], cell: Cell) -> bool:
  r, c = cell
  return 0 <= r < len(rows) and 0 <= c < len(rows[0]) and rows[r][c] != "#"


def shortest_path(rows: list[str], start: Cell, goal: Cell) -> str | None:
  """The BFS shortest move string from `start` to `goal`, or None if unreachable."""
  return grid.bfs(start, lambda cell: ((m, grid.step(cell, m)) for m in grid.MOVES
                                       if _free(rows, grid.step(cell, m))),
                  lambda cell: cell == goal)


def goal_distances(rows: list[str], goal: Cell, potential: str) -> dict[Cell, int]:
  """Moves from each free cell reachable from `goal` to it: `"bfs"` around `#`, or `"manhattan"`."""
  free = [(r, c) for r in range(len(rows)) for c in range(len(rows[0])) if rows[r][c] != "#"]
  if potential == "manhattan":
    return {cell: abs(cell[0] - goal[0]) + abs(cell[1] - goal[1]) for cell in free}
  if potential != "bfs":
    raise ValueError(f"potential={potential!r}: choose 'bfs' or 'manhattan'")
  distances = {goal: 0}
  frontier = [goal]
  while frontier:
    cell = frontier.pop(0)
    for move in grid.MOVES:
      nxt = grid.step(cell, move)
      if _free(rows, nxt) and nxt not in distances:
        distances[nxt] = distances[cell] + 1
        frontier.append(nxt)
  return distances


def _render(rows: list[str], pos: Cell, goal: Cell) -> str:
  def char_at(cell: Cell) -> str:
    return "S" if cell == pos else "G" if cell == goal else rows[cell[0]][cell[1]]
  return grid.render(len(rows), len(rows[0]), char_at)


def generate_task(seed: int, split: str, cfg: dict) -> dict:
  """One instance of `split`: `grid` rows of `.`/`#`, `start`, `goal`, `shortest` (moves)."""
  cfg = {**default_config(), **cfg}
  rng = random.Random(f"{NAME}/{split}/{seed}")
  n = cfg["size"]
  for _ in range(100_000):
    rows = ["".join("#" if rng.random() < cfg["blocked"] else "." for _ in range(n))
            for _ in range(n)]
    free = [(r, c) for r in range(n) for c in range(n) if rows[r][c] == "."]
    if len(free) < 2:
      continue
    start, goal = rng.sample(free, 2)
    path = shortest_path(rows, start, goal)
    if (path is not None and cfg["min_path"] <= len(path) <= cfg["max_path"]
        and split_of(_render(rows, start, goal)) == split):
      return {"grid": rows, "start": list(start), "goal": list(goal), "shortest": len(path)}
  raise ValueError(f"no {NAME} instance fits {cfg}")


class PlanPathWorkflow(grid.MoveWorkflow):
  """One Plan-Path episode: the position and the number of moves made so far."""

  INVALID_REWARD = INVALID_REWARD
  FAIL_REWARD = FAIL_REWARD
  OUTCOME_WORDS = {"goal": "they would reach the goal.",
                   "blocked": "at least one of them would be blocked.",
                   "ok": "they would not reach the goal yet, and none would be blocked."}

  def __init__(self, task: dict, kind: str, cfg: dict, max_turns: int,
               prompt_style: str = "compact"):
    cfg = {**default_config(), **cfg}
    super().__init__(task, kind, max_turns, cfg["max_moves_per_turn"], prompt_style)
    self.rows = task["grid"]
    self.goal = tuple(task["goal"])
    self.pos = tuple(task["start"])
    self.moves_made = 0
    self.shaping = float(cfg["shaping"])
    self.distances = goal_distances(self.rows, self.goal, cfg["potential"]) if self.shaping else {}

  @property
  def success(self) -> bool:
    return self.pos == self.goal

  def render(self) -> str:
    return _render(self.rows, self.pos, self.goal)

  def solve(self) -> str | None:
    return shortest_path(self.rows, self.pos, self.goal)

  def chat_rules(self) -> str:
    return ("Walk from your position S to the goal G of the grid in as few moves as possible. "
            "A move into a blocked cell (#) or off the grid is blocked: you stay where you are "
            "and are penalised.")

  def chat_state(self) -> str:
    rows = self.render().split("/")
    return (f"The grid (S: you, G: the goal, #: blocked, .: free):\n{chat.grid_lines(rows)}\n"
            f"You are at {chat.cell_words(self.pos)}; the goal is at "
            f"{chat.cell_words(self.goal)}.")

  def heuristic_response(self, role: str) -> str:
    """The myopic planner's moves: straight at the goal (rows first), blind to `#`."""
    del role
    (r, c), (goal_r, goal_c) = self.pos, self.goal
    moves = ("D" if goal_r > r else "U") * abs(goal_r - r) + ("R" if goal_c > c else "L") * abs(
        goal_c - c)
    return moves[:self.max_moves]

  def apply(self, moves: str) -> tuple[float, str]:
    reward, blocked = 0.0, False
    for move in moves:
      if self.success:
        break
      self.moves_made += 1
      nxt = grid.step(self.pos, move)
      if _free(self.rows, nxt):
        if self.shaping:
          reward += self.shaping * (self.distances[self.pos] - self.distances[nxt])
        self.pos = nxt
        reward += STEP_REWARD
      else:
        reward += INVALID_REWARD
        blocked = True
      if self.success:
        reward += GOAL_REWARD + (OPTIMAL_BONUS if self.moves_made == self.task["shortest"] else 0.0)
    return reward, "goal" if self.success else "blocked" if blocked else "ok"


def make_workflow(task: dict, kind: str, cfg: dict, max_turns: int,
                  prompt_style: str = "compact") -> PlanPathWorkflow:
  """A `"single"` (agent) or `"mas"` (tool, plan) episode of `task`."""
  return PlanPathWorkflow(task, kind, cfg, max_turns, prompt_style)
