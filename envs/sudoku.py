"""4x4 Sudoku (2x2 boxes, digits 1-4), closed loop, after the Sudoku row of the workflow
table of the AT-GRPO paper ("Stronger Together").

Task: a valid complete grid with `min_blanks`..`max_blanks` cells blanked, kept only when the
puzzle has exactly one solution (checked by a backtracking solver). An instance is
`{"puzzle": "1034...", "solution": "1234..."}`, 16 digits row-major, `0` for a blank. One
instance in ten, by a hash of the puzzle string, belongs to the test split.

Rendering: the rows joined by `/`, blanks as `.` (`"1.34/3412/2.43/43.1"`).

Action syntax: a fill is three digits `rcd`: row `r` and column `c` (1-4, from the top left)
get digit `d`; `"234"` puts 4 at row 2, column 3. An answer is 1 to `max_fills` fills
(default 1); whitespace, commas and semicolons are ignored (`"23 4"` = `"234"`,
`"234,412"` is two fills). Anything else does not parse. An answer's fills are checked in
order and applied all or none: every fill must go to a blank cell and not repeat a digit of
its row, column or box (earlier fills of the answer included).

Workflows (compact: one user message per prompt; chat (`envs.chat`): a system message with
the role, the rules and the answer format `<answer>234</answer>`, then the turn, the grid as
numbered lines and, for the plan, the tool's proposal and its outcome in words):
- single: role `agent` sees `<grid>` and answers the fills that are applied.
- mas: stage 1, role `tool` sees `T <grid>` and proposes fills, checked on a copy; stage 2,
  role `plan` sees `P <grid> <fills>:<outcome>` (outcome `ok`, `conflict` or `solved`;
  `?:invalid` when the proposal did not parse) and answers the fills that are applied.

Rewards (spec: +2 solved, -0.5 invalid; the rest are this module's choices, all in
`default_config()`):
- `reward_invalid` -0.5: an unparseable answer, a filled cell, or a row/column/box conflict
  (nothing applied). `RoleOutcome.invalid` marks only the unparseable ones.
- `reward_solved` +2: the answer completes the grid.
- `reward_fill` +0.1 per fill: legal fills that agree with the (unique) solution, a small
  per-step reward so that a correct step outscores a legal but wrong one.
- A legal fill that disagrees with the solution earns 0 and leaves an unsolvable grid: the
  episode fails at once (`failed`).
- `reward_fail` 0 (the spec gives no Sudoku failure penalty): added when the episode ends
  unsolved (a wrong fill, or the last turn).
The tool's local reward is what its proposal would earn if applied (failure penalty
included); the plan's local reward and the team reward are the applied answer's reward; the
tool stage applies nothing (team reward 0). Single: local = team = the applied reward.

Expert: the first blank cell (row-major) with its solution digit; the plan agent's expert
repeats the tool's proposal when it agrees with the solution.
"""
from __future__ import annotations

import functools
import random

from envs import chat
from envs.splits import split_of
from marft.rollout.workflow import (Message, RoleOutcome, StageResult, Workflow,
                                    workflow_roles)

NAME = "sudoku"
PROMPT_STYLES = chat.PROMPT_STYLES
SIZE = 4
BOX = 2
DIGITS = "1234"
MAX_BLANKS = 12  # a 4x4 puzzle needs at least 4 givens to have one solution
_SEPARATORS = str.maketrans("", "", " \t\n\r,;")
_MAX_ANSWER = 64  # longer answers do not parse
_ROLE_TEXT = {
    "agent": "You are an agent solving a 4x4 Sudoku alone.",
    "tool": ("You are the tool agent of a two-agent team solving a 4x4 Sudoku. You propose "
             "fills; they are checked, and the plan agent sees the result and decides the fills "
             "that are made."),
    "plan": ("You are the plan agent of a two-agent team solving a 4x4 Sudoku. The tool agent "
             "proposed fills and you see whether they are legal; your fills are the ones made."),
}
_OUTCOME_WORDS = {"ok": "they are legal.", "solved": "they would complete the grid.",
                  "conflict": ("they are not legal (a filled cell, or a digit repeated in a row, "
                               "column or box).")}


def default_config() -> dict:
  """Tiny defaults: 3-6 blanks, one fill an answer, 8 turns, and the rewards (module doc)."""
  return {"min_blanks": 2, "max_blanks": 4, "max_fills": 1, "max_turns": 8,
          "reward_solved": 2.0, "reward_invalid": -0.5, "reward_fill": 0.1,
          "reward_fail": 0.0}


@functools.cache
def peers(cell: int) -> tuple[int, ...]:
  """The other cells of `cell`'s row, column and box."""
  r, c = divmod(cell, SIZE)
  return tuple(other for other in range(SIZE * SIZE) if other != cell and (
      other // SIZE == r or other % SIZE == c or
      (other // SIZE // BOX, other % SIZE // BOX) == (r // BOX, c // BOX)))


def conflicts(grid: str, cell: int, digit: str) -> bool:
  """Whether `digit` already appears in a peer of `cell`."""
  return any(grid[other] == digit for other in peers(cell))


def solve(grid: str, limit: int | None = 2) -> list[str]:
  """Up to `limit` completions of `grid` (all of them if `limit` is None), by backtracking."""
  found: list[str] = []

  def search(g: str) -> None:
    blank = g.find("0")
    if blank < 0:
      found.append(g)
      return
    for d in DIGITS:
      if limit is not None and len(found) >= limit:
        return
      if not conflicts(g, blank, d):
        search(g[:blank] + d + g[blank + 1:])

  search(grid)
  return found


@functools.cache
def complete_grids() -> tuple[str, ...]:
  """All 288 valid complete 4x4 grids."""
  return tuple(solve("0" * SIZE * SIZE, limit=None))


def render(grid: str) -> str:
  """`"1.34/3412/2.43/43.1"`: rows joined by `/`, blanks as `.`."""
  return "/".join(grid[r * SIZE:(r + 1) * SIZE].replace("0", ".") for r in range(SIZE))


def generate_task(seed: int, split: str, cfg: dict) -> dict:
  """A uniquely solvable puzzle of `split`, deterministic in `(seed, split, cfg)`."""
  if split not in ("train", "test"):
    raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
  if not 1 <= cfg["min_blanks"] <= cfg["max_blanks"] <= MAX_BLANKS:
    raise ValueError(f"need 1 <= min_blanks <= max_blanks <= {MAX_BLANKS}, got "
                     f"{cfg['min_blanks']}..{cfg['max_blanks']}")
  rng = random.Random(f"{NAME}/{split}/{seed}")
  while True:
    solution = rng.choice(complete_grids())
    blanks = rng.sample(range(SIZE * SIZE), rng.randint(cfg["min_blanks"], cfg["max_blanks"]))
    puzzle = "".join("0" if i in blanks else d for i, d in enumerate(solution))
    if split_of(puzzle) == split and len(solve(puzzle)) == 1:
      return {"puzzle": puzzle, "solution": solution}


def parse_fills(text: str, max_fills: int) -> list[tuple[int, str]] | None:
  """The `(cell, digit)` fills of an answer (see the module doc), or None if it does not parse
  (or is not text)."""
  if not isinstance(text, str) or len(text) > _MAX_ANSWER:
    return None
  chars = text.translate(_SEPARATORS)
  n = len(chars) // 3
  if not 1 <= n <= max_fills or len(chars) != 3 * n or not set(chars) <= set(DIGITS):
    return None
  return [((int(chars[3 * i]) - 1) * SIZE + int(chars[3 * i + 1]) - 1, chars[3 * i + 2])
          for i in range(n)]


def format_fills(fills: list[tuple[int, str]]) -> str:
  """The canonical answer for `fills`: `rcd` triples joined by commas."""
  return ",".join(f"{cell // SIZE + 1}{cell % SIZE + 1}{d}" for cell, d in fills)


class SudokuWorkflow(Workflow):
  """One closed-loop Sudoku episode (see the module docstring)."""

  def __init__(self, task: dict, kind: str, cfg: dict, max_turns: int,
               prompt_style: str = "compact"):
    super().__init__(task, max_turns, chat.check_prompt_style(prompt_style))
    self.roles = workflow_roles(kind, ("tool", "plan"))
    self.kind = kind
    self.cfg = cfg
    self.grid = task["puzzle"]
    self.proposal: list[tuple[int, str]] | None = None
    self.proposal_text = ""  # e.g. "234:ok", shown to the plan agent

  def stages(self) -> tuple[tuple[str, ...], ...]:
    return (("agent",),) if self.kind == "single" else (("tool",), ("plan",))

  @property
  def success(self) -> bool:
    return self.grid == self.task["solution"]

  @property
  def failed(self) -> bool:
    """A filled cell disagrees with the solution: the grid can no longer be solved."""
    return any(g != "0" and g != s for g, s in zip(self.grid, self.task["solution"]))

  def prompt(self, role: str) -> list[Message]:
    board = render(self.grid)
    if self.prompt_style == "chat":
      return self._chat_prompt(role, board)
    text = {"agent": board, "tool": f"T {board}", "plan": f"P {board} {self.proposal_text}"}
    return [{"role": "user", "content": text[role]}]

  def _chat_prompt(self, role: str, board: str) -> list[Message]:
    max_fills = self.cfg["max_fills"]
    rules = ("Fill the blank cells (.) of the 4x4 grid with digits 1-4 so that every row, every "
             "column and every 2x2 box holds each digit once. A fill is three digits: row, "
             f"column, digit (234 puts 4 at row 2, column 3); an answer makes 1 to {max_fills} "
             "fills, separated by commas, all made or none. A fill into a filled cell or one that "
             "repeats a digit is illegal and penalised; a legal fill that disagrees with the "
             f"solution fails the puzzle. The episode lasts at most {self.max_turns} turns.")
    system = chat.system_prompt(_ROLE_TEXT[role], rules,
                                "the fills as digit triples, e.g. <answer>234</answer>")
    lines = [chat.turn_words(self.turn, self.max_turns),
             f"The grid (.: blank):\n{chat.grid_lines(board.split('/'))}"]
    if role == "plan" and self.proposal_text:
      fills, _, outcome = self.proposal_text.partition(":")
      lines.append("The tool agent's answer was not valid." if fills == "?" else
                   f"The tool agent proposed {fills}: {_OUTCOME_WORDS[outcome]}")
    return chat.chat_messages(system, "\n\n".join(lines))

  def act(self, responses: dict[str, str]) -> StageResult:
    (role,) = self.acting_roles()
    answer = chat.answer_of(responses.get(role, ""), self.prompt_style)
    fills = None if answer is None else parse_fills(answer, self.cfg["max_fills"])
    if role == "tool":
      reward, outcome = self.clone()._play(fills, final=self.turn == self.max_turns - 1)
      self.proposal = fills
      self.proposal_text = f"{format_fills(fills)}:{outcome}" if fills else "?:invalid"
      team_reward = 0.0
    else:
      reward, _ = self._play(fills, final=self.last_stage_of_last_turn)
      team_reward = reward
    self.advance()
    return StageResult({role: RoleOutcome(reward, fills is None)}, team_reward)

  def _play(self, fills: list[tuple[int, str]] | None, final: bool) -> tuple[float, str]:
    """Applies parsed fills (all or none); returns the reward and the outcome word."""
    cfg = self.cfg
    if fills is None:
      reward, outcome = cfg["reward_invalid"], "invalid"
    else:
      grid = self.grid
      for cell, d in fills:
        if grid[cell] != "0" or conflicts(grid, cell, d):
          reward, outcome = cfg["reward_invalid"], "conflict"
          break
        grid = grid[:cell] + d + grid[cell + 1:]
      else:
        self.grid = grid
        if self.success:
          reward, outcome = cfg["reward_solved"], "solved"
        else:
          outcome = "ok"
          reward = 0.0 if self.failed else cfg["reward_fill"] * len(fills)
    if not self.success and (final or self.failed):
      reward += cfg["reward_fail"]
    return reward, outcome

  def expert_response(self, role: str) -> str:
    solution = self.task["solution"]
    if role == "plan" and self.proposal and all(
        self.grid[cell] == "0" and solution[cell] == d for cell, d in self.proposal):
      return format_fills(self.proposal)
    cell = self.grid.find("0")
    return format_fills([(cell, solution[cell])]) if cell >= 0 else ""


def make_workflow(task: dict, kind: str, cfg: dict, max_turns: int,
                  prompt_style: str = "compact") -> SudokuWorkflow:
  return SudokuWorkflow(task, kind, cfg, max_turns, prompt_style)
