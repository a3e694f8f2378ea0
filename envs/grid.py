"""Shared pieces of the grid tasks (`envs.plan_path`, `envs.sokoban`).

- Moves are the letters `U D L R` (up = row - 1, left = column - 1). An answer is 1 to
  `max_moves` of them, surrounding whitespace ignored, nothing else (`"RD"`, `" U\n"`; not
  `"rd"`, `"R D"`, `"RDX"`): anything else is unparseable.
- A grid renders as its rows joined by `/` on one line (`"S.#../...G."`), short enough for a
  character-level model.
- `bfs`: shortest move string over any hashable states (cells, or (player, box) pairs).
- `MoveWorkflow`: the closed-loop workflow both tasks share, after the Plan-Path/Sokoban row
  of the workflow table in the AT-GRPO paper ("Stronger Together"). Every turn the state is rendered
  afresh and the acting role answers a few moves:
  - single: role `agent` answers the moves that are applied;
  - mas: stage 1, role `tool` proposes moves, which are simulated on a copy of the episode;
    stage 2, role `plan` sees the state, the proposal and its simulated outcome, and answers
    the moves that are applied. The tool's local reward is what its proposal would have
    earned if applied (failure penalty included); the plan's local reward and the team
    reward are the applied moves' reward (the tool stage applies nothing: team reward 0).
  Compact prompts (one user message): single `<grid>`; tool `T <grid>`; plan
  `P <grid> <proposal>`, the proposal as `<moves>:<outcome>`, or `?:invalid` when it did not
  parse. Chat prompts (`envs.chat`): a system message with the role, the task's rules and the
  answer format (`<answer>RD</answer>`), then the turn, the grid as numbered lines, the
  positions in words and, for the plan, the tool's proposal and what it would do; the answer
  may separate moves by spaces or commas and use lower case (`r, d`).
"""
from __future__ import annotations

import abc
import collections
import re
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from envs import chat
from marft.rollout.workflow import (Message, RoleOutcome, StageResult, Workflow,
                                    workflow_roles)

Cell = tuple[int, int]
MOVES = {"U": (-1, 0), "D": (1, 0), "L": (0, -1), "R": (0, 1)}
_MOVES_RE = re.compile("[UDLR]+")
_MOVE_SEPARATORS = re.compile(r"[\s,;]+")
_ROLE_TEXT = {
    "agent": "You are an agent solving a grid puzzle alone.",
    "tool": ("You are the tool agent of a two-agent team solving a grid puzzle. You propose "
             "moves; they are simulated, and the plan agent sees what they would do and decides "
             "the moves that are made."),
    "plan": ("You are the plan agent of a two-agent team solving a grid puzzle. The tool agent "
             "proposed moves and you see what they would do; your moves are the ones made."),
}


def parse_moves(text: str, max_moves: int) -> str | None:
  """The moves of an answer (1 to `max_moves` letters of `UDLR`), or None if it does not parse
  (or is not text)."""
  if not isinstance(text, str):
    return None
  moves = text.strip()
  if 1 <= len(moves) <= max_moves and _MOVES_RE.fullmatch(moves):
    return moves
  return None


def parse_chat_moves(text: str | None, max_moves: int) -> str | None:
  """`parse_moves` of a chat answer (`envs.chat.extract_answer`), which may separate the moves
  by spaces, commas or semicolons and write them in lower case."""
  if not isinstance(text, str):
    return None
  return parse_moves(_MOVE_SEPARATORS.sub("", text).upper(), max_moves)


def step(cell: Cell, move: str) -> Cell:
  """The neighbouring cell in the direction of `move` (may lie off the grid)."""
  dr, dc = MOVES[move]
  return cell[0] + dr, cell[1] + dc


def render(height: int, width: int, char_at: Callable[[Cell], str]) -> str:
  """The grid as `height` rows of `width` characters joined by `/`."""
  return "/".join("".join(char_at((r, c)) for c in range(width)) for r in range(height))


def bfs(start: Hashable, neighbors: Callable[[Any], Iterable[tuple[str, Hashable]]],
        is_goal: Callable[[Any], bool]) -> str | None:
  """The shortest move string from `start` to a goal state, or None if none is reachable.

  `neighbors(state)` yields `(move, next_state)`; ties go to the first move yielded.
  """
  previous: dict[Hashable, tuple[Hashable, str] | None] = {start: None}
  queue = collections.deque([start])
  while queue:
    state = queue.popleft()
    if is_goal(state):
      moves = []
      while (link := previous[state]) is not None:
        state, move = link
        moves.append(move)
      return "".join(reversed(moves))
    for move, nxt in neighbors(state):
      if nxt not in previous:
        previous[nxt] = (state, move)
        queue.append(nxt)
  return None


class MoveWorkflow(Workflow):
  """A closed-loop grid episode (see the module docstring); subclasses hold the task state."""

  INVALID_REWARD: float  # an unparseable answer, or one blocked move
  FAIL_REWARD: float  # the turn limit without success, or an unsolvable state

  OUTCOME_WORDS: dict[str, str]  # outcome word -> what the plan agent is told it means

  def __init__(self, task: dict, kind: str, max_turns: int, max_moves: int,
               prompt_style: str = "compact"):
    super().__init__(task, max_turns, chat.check_prompt_style(prompt_style))
    self.roles = workflow_roles(kind, ("tool", "plan"))
    self.kind = kind
    self.max_moves = max_moves
    self.proposal = ""  # the tool's proposal and its simulated outcome, e.g. "RD:ok"

  @abc.abstractmethod
  def render(self) -> str:
    """The current state as one line."""

  @abc.abstractmethod
  def chat_rules(self) -> str:
    """The task's rules in words, for the chat system message."""

  @abc.abstractmethod
  def chat_state(self) -> str:
    """The current state in words and as numbered grid lines (`envs.chat.grid_lines`)."""

  @abc.abstractmethod
  def apply(self, moves: str) -> tuple[float, str]:
    """Plays parsed moves on this episode; returns their reward and an outcome word."""

  @abc.abstractmethod
  def solve(self) -> str | None:
    """The shortest move string that solves the task from the current state, if any."""

  def stages(self) -> tuple[tuple[str, ...], ...]:
    return (("agent",),) if self.kind == "single" else (("tool",), ("plan",))

  def prompt(self, role: str) -> list[Message]:
    if self.prompt_style == "chat":
      return self._chat_prompt(role)
    board = self.render()
    text = {"agent": board, "tool": f"T {board}", "plan": f"P {board} {self.proposal}"}[role]
    return [{"role": "user", "content": text}]

  def _chat_prompt(self, role: str) -> list[Message]:
    rules = (f"{self.chat_rules()} Moves are U (up), D (down), L (left) and R (right); each "
             f"answer makes 1 to {self.max_moves} moves, in order. The episode lasts at most "
             f"{self.max_turns} turns.")
    system = chat.system_prompt(_ROLE_TEXT[role], rules,
                                "the moves as letters, e.g. <answer>RD</answer>")
    lines = [chat.turn_words(self.turn, self.max_turns), self.chat_state()]
    if role == "plan" and self.proposal:
      moves, _, outcome = self.proposal.partition(":")
      lines.append("The tool agent's answer was not valid." if moves == "?" else
                   f"The tool agent proposed {moves}; if made, {self.OUTCOME_WORDS[outcome]}")
    return chat.chat_messages(system, "\n\n".join(lines))

  def act(self, responses: dict[str, str]) -> StageResult:
    (role,) = self.acting_roles()
    if self.prompt_style == "chat":
      moves = parse_chat_moves(chat.extract_answer(responses.get(role)), self.max_moves)
    else:
      moves = parse_moves(responses.get(role), self.max_moves)
    if role == "tool":
      reward, outcome = self.clone()._play(moves, final=self.turn == self.max_turns - 1)
      self.proposal = f"{moves or '?'}:{outcome}"
      team_reward = 0.0
    else:
      reward, _ = self._play(moves, final=self.last_stage_of_last_turn)
      team_reward = reward
    self.advance()
    return StageResult({role: RoleOutcome(reward, moves is None)}, team_reward)

  def _play(self, moves: str | None, final: bool) -> tuple[float, str]:
    """Applies one answer; adds the failure penalty if it fails or ends the last turn unsolved."""
    if moves is None:
      reward, outcome = self.INVALID_REWARD, "invalid"
    else:
      reward, outcome = self.apply(moves)
    if not self.success and (final or self.failed):
      reward += self.FAIL_REWARD
    return reward, outcome

  def expert_response(self, role: str) -> str:
    """The next moves of a shortest solution (the same for every role); "" if unsolvable."""
    return (self.solve() or "")[:self.max_moves]
