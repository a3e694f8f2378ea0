"""Sokoban: push the one box onto the target in a small walled room.

After the AT-GRPO paper's ("Stronger Together") task table (the paper uses 6x6 rooms with one box). The room is a
`size` x `size` interior (tiny default 5x5) with up to `walls` extra wall cells inside; outside
it is wall. Instances are random placements of walls, player, box and target kept only when the
BFS solver over (player, box) states solves them in `min_solution` to `max_solution` moves (so
always solvable, and solvable by the expert within `max_turns`).

Rendering (the interior only, rows joined by `/`): `#` wall, `_` floor, `.` target, `@` player
(`+` on the target), `$` box (`*` on the target), e.g. `_#___/_@$_./_____/__#__/_____`.

Workflows (closed loop; `envs.grid.MoveWorkflow`): each turn the acting role answers 1 to
`max_moves_per_turn` moves (`U D L R`, e.g. `RR`); walking into the box pushes it.
- single: `agent` sees `<room>` and answers the moves that are applied.
- mas: `tool` sees `T <room>` and proposes moves, simulated on a copy; `plan` sees
  `P <room> <moves>:<outcome>` (outcome `solved`, `stuck`, `blocked`, `ok`, or `?:invalid`) and
  answers the moves that are applied.

Rewards (the spec's turn rewards, per answer): +1 box onto the target, -0.5 box off the target
(cannot happen with one box: the episode ends when it reaches the target), +10 solved (so the
solving push earns 11), -5 failure: the last turn ends unsolved, or a push leaves the box where
the target can no longer be reached (stuck; the episode ends). -0.1 per blocked move (into a wall
or off the room, or pushing the box into one; nothing moves) and -0.1 for an unparseable answer.
No per-move cost (the spec lists none; the reference code has -0.01). Local rewards: tool = what
its proposal would have earned if applied; plan and agent = the applied answer's reward, which
is also the team reward.
"""
from __future__ import annotations

import random

from envs import chat, grid
from envs.splits import split_of
from envs.grid import Cell

NAME = "sokoban"
PROMPT_STYLES = chat.PROMPT_STYLES

INVALID_REWARD = -0.1
BOX_ON_GOAL_REWARD = 1.0
BOX_OFF_GOAL_REWARD = -0.5
SOLVED_REWARD = 10.0
FAIL_REWARD = -5.0

State = tuple[Cell, Cell]  # (player, box)


def default_config() -> dict:
  """Tiny defaults: 5x5 interior, <= 3 inner walls, 3-8 move solutions, 2 moves a turn, 6 turns."""
  return {"size": 5, "walls": 3, "min_solution": 3, "max_solution": 8, "max_moves_per_turn": 2,
          "max_turns": 6}


def _free(room: list[str], cell: Cell) -> bool:
  r, c = cell
  return 0 <= r < len(room) and 0 <= c < len(room[0]) and room[r][c] != "#"


def push(room: list[str], state: State, move: str) -> State | None:
  """The state after `move` (walking, or pushing the box), or None if the move is blocked."""
  player, box = state
  nxt = grid.step(player, move)
  if not _free(room, nxt):
    return None
  if nxt != box:
    return nxt, box
  pushed = grid.step(box, move)
  return (nxt, pushed) if _free(room, pushed) else None


def solve(room: list[str], state: State, target: Cell) -> str | None:
  """The BFS shortest move string that puts the box on `target`, or None if none does."""
  def neighbors(s: State):
    for move in grid.MOVES:
      if (nxt := push(room, s, move)) is not None:
        yield move, nxt
  return grid.bfs(state, neighbors, lambda s: s[1] == target)


def _render(room: list[str], state: State, target: Cell) -> str:
  player, box = state
  def char_at(cell: Cell) -> str:
    if cell == player:
      return "+" if cell == target else "@"
    if cell == box:
      return "*" if cell == target else "$"
    return "." if cell == target else room[cell[0]][cell[1]]
  return grid.render(len(room), len(room[0]), char_at)


def generate_task(seed: int, split: str, cfg: dict) -> dict:
  """One instance of `split`: `room` rows of `_`/`#`, `player`, `box`, `target`, `solution`."""
  cfg = {**default_config(), **cfg}
  rng = random.Random(f"{NAME}/{split}/{seed}")
  n = cfg["size"]
  cells = [(r, c) for r in range(n) for c in range(n)]
  for _ in range(100_000):
    walls = set(rng.sample(cells, rng.randint(0, cfg["walls"])))
    room = ["".join("#" if (r, c) in walls else "_" for c in range(n)) for r in range(n)]
    player, box, target = rng.sample([cell for cell in cells if cell not in walls], 3)
    solution = solve(room, (player, box), target)
    if (solution is not None and cfg["min_solution"] <= len(solution) <= cfg["max_solution"]
        and split_of(_render(room, (player, box), target)) == split):
      return {"room": room, "player": list(player), "box": list(box), "target": list(target),
              "solution": solution}
  raise ValueError(f"no {NAME} instance fits {cfg}")


class SokobanWorkflow(grid.MoveWorkflow):
  """One Sokoban episode: the player and box positions, and whether the box is stuck."""

  INVALID_REWARD = INVALID_REWARD
  FAIL_REWARD = FAIL_REWARD
  OUTCOME_WORDS = {"solved": "they would push the box onto the target.",
                   "stuck": ("they would push the box where it can no longer "
                             "reach the target (the episode would fail)."),
                   "blocked": "at least one of them would be blocked.",
                   "ok": "they would not solve the puzzle yet, and none would be blocked."}

  def __init__(self, task: dict, kind: str, cfg: dict, max_turns: int,
               prompt_style: str = "compact"):
    super().__init__(task, kind, max_turns, {**default_config(), **cfg}["max_moves_per_turn"],
                     prompt_style)
    self.room = task["room"]
    self.target = tuple(task["target"])
    self.state: State = (tuple(task["player"]), tuple(task["box"]))
    self.stuck = False

  @property
  def success(self) -> bool:
    return self.state[1] == self.target

  @property
  def failed(self) -> bool:
    return self.stuck

  def render(self) -> str:
    return _render(self.room, self.state, self.target)

  def solve(self) -> str | None:
    return solve(self.room, self.state, self.target)

  def chat_rules(self) -> str:
    return ("Push the box onto the target. You walk one cell per move; walking into the box "
            "pushes it one cell further if that cell is free. You cannot walk into a wall (#) "
            "or off the room, nor push the box into one: such a move is blocked and penalised. "
            "A box pushed where it can no longer reach the target fails the episode.")

  def chat_state(self) -> str:
    (player, box) = self.state
    rows = self.render().split("/")
    return (f"The room (@: you, $: the box, .: the target, *: the box on the target, +: you on "
            f"the target, #: wall, _: floor):\n{chat.grid_lines(rows)}\n"
            f"You are at {chat.cell_words(player)}; the box is at {chat.cell_words(box)}; the "
            f"target is at {chat.cell_words(self.target)}.")

  def apply(self, moves: str) -> tuple[float, str]:
    reward, blocked = 0.0, False
    for move in moves:
      if self.success or self.stuck:
        break
      nxt = push(self.room, self.state, move)
      if nxt is None:
        reward += INVALID_REWARD
        blocked = True
        continue
      old_box, self.state = self.state[1], nxt
      box = self.state[1]
      if box == old_box:
        continue
      if (box == self.target) != (old_box == self.target):
        reward += BOX_ON_GOAL_REWARD if box == self.target else BOX_OFF_GOAL_REWARD
      if self.success:
        reward += SOLVED_REWARD
      else:
        self.stuck = self.solve() is None
    outcome = ("solved" if self.success else "stuck" if self.stuck else
               "blocked" if blocked else "ok")
    return reward, outcome


def make_workflow(task: dict, kind: str, cfg: dict, max_turns: int,
                  prompt_style: str = "compact") -> SokobanWorkflow:
  """A `"single"` (agent) or `"mas"` (tool, plan) episode of `task`."""
  return SokobanWorkflow(task, kind, cfg, max_turns, prompt_style)
