"""The contract between text tasks (`envs/`) and the rollout engine.

A `Workflow` is one episode of one task under one arrangement of agents (Flex-POMDP): it says
which roles act in each stage of a turn (a stage's roles act in parallel; later stages see
earlier stages' outputs), renders each role's prompt from the current state and transcript,
parses each response into an action, applies or simulates it, and scores it. Text in, text
out; plain Python. Malformed responses are never exceptions: they are invalid actions with
their penalty (`RoleOutcome.invalid`). Prompts come in two styles (`prompt_style`, see
`envs.chat`): `compact` strings for character models and `chat` messages for real LLMs.
"""
from __future__ import annotations

import abc
import copy
import dataclasses
from typing import Any

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


@dataclasses.dataclass
class RoleOutcome:
  """What one role's action earned: its local reward, whether it failed to parse, and the
  verifier score the workflow showed for it (None: not scored)."""

  reward: float
  invalid: bool = False
  score: float | None = None


@dataclasses.dataclass
class StageResult:
  """Outcomes of one stage: per acting role, plus the team reward of this stage."""

  outcomes: dict[str, RoleOutcome]
  team_reward: float = 0.0


def workflow_roles(kind: str, mas_roles: tuple[str, ...]) -> tuple[str, ...]:
  """The roles of a `"single"` (one `"agent"`) or `"mas"` workflow; any other kind is an error."""
  if kind == "single":
    return ("agent",)
  if kind == "mas":
    return mas_roles
  raise ValueError(f"unknown workflow kind {kind!r}; choose 'single' or 'mas'")


def workflow_class(kind: str, single: type, mas: type) -> type:
  """The workflow class of a `"single"` or `"mas"` kind; any other kind is an error."""
  workflow_roles(kind, ())
  return single if kind == "single" else mas


class Workflow(abc.ABC):
  """One episode. Subclasses hold the task state and the transcript; `clone` deep-copies.

  The episode lasts at most `max_turns` turns; `done` turns true when it is solved, failed,
  or the last stage of the last turn has acted (the workflow applies any failure penalty in
  that stage's outcomes itself).
  """

  #: every role this workflow can ask to act, in a fixed order (role ids index this tuple)
  roles: tuple[str, ...] = ()

  def __init__(self, task: Any, max_turns: int, prompt_style: str = "compact"):
    self.task = task
    self.max_turns = max_turns
    self.prompt_style = prompt_style  # "compact" or "chat" (envs.chat)
    self.turn = 0  # completed turns
    self.stage = 0  # index into stages() within the current turn

  @abc.abstractmethod
  def stages(self) -> tuple[tuple[str, ...], ...]:
    """The roles acting in each stage of a turn, e.g. `(("tool",), ("plan",))`."""

  @abc.abstractmethod
  def prompt(self, role: str) -> list[Message]:
    """The chat messages `role` sees now (rendered from the current state)."""

  @abc.abstractmethod
  def act(self, responses: dict[str, str]) -> StageResult:
    """Applies the current stage's responses (one per acting role) and scores them.

    Implementations call `self.advance()` at the end to move to the next stage/turn.
    """

  @abc.abstractmethod
  def expert_response(self, role: str) -> str:
    """A correct response for `role` in the current state (solver output), for demonstrations."""

  def scoring_prompt(self, role: str) -> list[Message] | None:
    """The messages a verifier reads before `role`'s response of this stage, to score it
    (the rollout engine's `scorer`); None (the default): this workflow's responses are not
    scored."""
    del role
    return None

  def observe_scores(self, scores: dict[str, float]) -> None:
    """Receives the verifier's score of each acting role's response, before `act`."""
    del scores

  def metrics(self) -> dict[str, float]:
    """Counters of this episode the engine sums over a rollout's episodes into
    `rollout/<name>` (e.g. a tool's calls and seconds); none by default."""
    return {}

  def final_answer(self) -> str | None:
    """The episode's final answer as shown (what majority voting counts), or None (the
    default): it gave none, or the task has no single answer."""
    return None

  def parent_role(self, role: str) -> str | None:
    """The role whose latest action started the nested episode `role` acts in now (MATPO's
    planner, for its worker), or None (the default): `role` acts at the top level. The rollout
    engine gives such rows that action's row as their parent (`TurnBatch.parent_id`)."""
    del role
    return None

  def heuristic_response(self, role: str) -> str | None:
    """A plausible but myopic response (a task's typical mistake), or None where the task has
    none; demonstrations mix it in so a base model learns the habit RL must unlearn."""
    del role
    return None

  @property
  @abc.abstractmethod
  def success(self) -> bool:
    """Whether the task is solved."""

  @property
  def done(self) -> bool:
    return self.success or self.turn >= self.max_turns or self.failed

  @property
  def failed(self) -> bool:
    """Whether the episode ended early without success (e.g. an unrecoverable state)."""
    return False

  def acting_roles(self) -> tuple[str, ...]:
    return self.stages()[self.stage]

  def advance(self) -> None:
    """Moves to the next stage, or to the next turn after the last stage."""
    self.stage += 1
    if self.stage == len(self.stages()):
      self.stage = 0
      self.turn += 1

  @property
  def last_stage_of_last_turn(self) -> bool:
    return self.stage == len(self.stages()) - 1 and self.turn == self.max_turns - 1

  def clone(self) -> "Workflow":
    return copy.deepcopy(self)
