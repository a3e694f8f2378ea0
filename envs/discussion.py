"""MAPoRL's multi-agent discussion (Park et al. 2025, Sec. 3): A agents answer one question over
T turns. Turn 1: each answers alone; at every later turn each sees its own and the others'
previous answers, each tagged with its verifier score, and answers again. Any task with an exact
checker plugs in with a `Checker`. Roles `agent1`..`agentA` act in parallel, one stage a turn.

Prompts:
- compact: turn 1 `D <question>`; later `D <question> Y<own>:<s> O<other>:<s> ...` (the others
  in agent order), `<answer>` the previous answer as the task shows it (`?` when it did not
  parse) and `<s>` its verifier score as one digit, floor(10 s) capped at 9;
- chat: a system message (the team, the rules, the answer format), the question, and the
  previous turn's answers in words with their scores to two decimals.
The verifier reads `scoring_prompt`: the question alone (compact `S <question>`), then the
response, so a score judges the answer, not the discussion.

Scores come from the rollout engine's scorer (`observe_scores`); without one (demonstrations
for a base model, or MAPoRL with `verifier.kind = stand_in`) a stand-in is shown: a draw, fixed
by the question, turn, agent and answer, from U[0.5, 1) for a correct answer and U[0, 0.6) for
a wrong one (a nearly exact verifier: AUC 1 - 1/60). Each action's outcome carries the score
shown, so the rollout's rows keep it either way.

Rewards: local 1 for a correct answer, else 0 (an unparseable answer is wrong and invalid); team
reward at the last turn the fraction of agents right. Success: at least half the final answers
right. The episode always lasts T turns (no early consensus stop, as in MAPoRL's runs).
Expert: the task's answer; heuristic: the agent's own previous answer (a stubborn agent).
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any, NamedTuple

from envs import chat
from marft.rollout.workflow import Message, RoleOutcome, StageResult, Workflow

KIND = "discussion"


class Checker(NamedTuple):
  """A task's side of a discussion: `grade(response, style) -> (shown answer or None, correct)`
  (None: no parseable answer), the question text and the expert's answer."""

  grade: Callable[[str, str], tuple[str | None, bool]]
  question: str
  expert: str


def discussion_roles(agents: int) -> tuple[str, ...]:
  """`agent1`..`agent<A>`; A < 1 is an error."""
  if not isinstance(agents, int) or agents < 1:
    raise ValueError(f"agents={agents!r}: a discussion needs at least one agent")
  return tuple(f"agent{i + 1}" for i in range(agents))


def score_digit(score: float) -> str:
  """A verifier score in [0, 1] as the compact prompt's digit: floor(10 s), capped to 0..9
  (1e-6 of slack, so a float32 0.7 is a 7); NaN is a ValueError."""
  if math.isnan(score):
    raise ValueError(f"verifier score {score!r} is not a number")
  return str(int(min(9.0, max(0.0, score * 10 + 1e-6))))


def stand_in_score(question: str, turn: int, role: str, answer: str | None, correct: bool
                   ) -> float:
  """The score shown without a verifier (see the module doc)."""
  rng = random.Random(f"{question}/{turn}/{role}/{answer}")
  return rng.uniform(0.5, 1.0) if correct else rng.uniform(0.0, 0.6)


class DiscussionWorkflow(Workflow):
  """One discussion (see the module docstring)."""

  def __init__(self, task: Any, checker: Checker, max_turns: int, agents: int = 2,
               prompt_style: str = "compact"):
    if not isinstance(max_turns, int) or max_turns < 1:
      raise ValueError(f"max_turns={max_turns!r}: a discussion needs at least one turn")
    super().__init__(task, max_turns, chat.check_prompt_style(prompt_style))
    self.roles = discussion_roles(agents)
    self.checker = checker
    # per finished turn: role -> (shown answer or None, correct, verifier score)
    self.history: list[dict[str, tuple[str | None, bool, float]]] = []
    self.scores: dict[str, float] = {}  # this turn's verifier scores, from observe_scores

  def stages(self) -> tuple[tuple[str, ...], ...]:
    return (self.roles,)

  @property
  def success(self) -> bool:
    if self.turn < self.max_turns:
      return False
    final = self.history[-1]
    return 2 * sum(correct for _, correct, _ in final.values()) >= len(final)

  def _ordered(self, role: str) -> list[str]:
    return [role] + [r for r in self.roles if r != role]

  def prompt(self, role: str) -> list[Message]:
    if self.prompt_style == "chat":
      return self._chat_prompt(role)
    text = f"D {self.checker.question}"
    if self.history:
      last = self.history[-1]
      for r in self._ordered(role):
        answer, _, score = last[r]
        text += f" {'Y' if r == role else 'O'}{answer or '?'}:{score_digit(score)}"
    return [{"role": "user", "content": text}]

  def _chat_prompt(self, role: str) -> list[Message]:
    others = len(self.roles) - 1
    team = ("You answer alone and may revise your answer over several turns." if not others
            else f"You discuss the question with {others} other agent{'s' * (others > 1)}.")
    system = chat.system_prompt(
        f"You are {role.replace('agent', 'Agent ')} of a team solving a question. {team}",
        ("Turn 1: answer on your own. Later turns: you see the previous answers, each with a "
         "verifier's score from 0 (surely wrong) to 1 (surely right); reconsider and answer "
         f"again. The discussion lasts {self.max_turns} turns."),
        "the final answer, e.g. <answer>12</answer>")
    lines = [chat.turn_words(self.turn, self.max_turns), f"Question: {self.checker.question}"]
    if self.history:
      for r in self._ordered(role):
        answer, _, score = self.history[-1][r]
        who = "Your" if r == role else f"{r.replace('agent', 'Agent ')}'s"
        said = "no valid answer" if answer is None else answer
        lines.append(f"{who} previous answer: {said} (verifier score {score:.2f}).")
    return chat.chat_messages(system, "\n".join(lines))

  def scoring_prompt(self, role: str) -> list[Message]:
    if self.prompt_style == "chat":
      return chat.chat_messages("Answer the question.", f"Question: {self.checker.question}")
    return [{"role": "user", "content": f"S {self.checker.question}"}]

  def observe_scores(self, scores: dict[str, float]) -> None:
    """Keeps this turn's verifier scores; a non-finite one is a ValueError naming its role."""
    for role, score in scores.items():
      if not math.isfinite(score):
        raise ValueError(f"verifier score of {role} is {score!r}: scores are finite, in [0, 1]")
    self.scores = dict(scores)

  def act(self, responses: dict[str, str]) -> StageResult:
    graded, outcomes = {}, {}
    for role in self.roles:
      answer, correct = self.checker.grade(responses.get(role, ""), self.prompt_style)
      score = self.scores.get(role)
      if score is None:
        score = stand_in_score(self.checker.question, self.turn, role, answer, correct)
      graded[role] = (answer, bool(correct), float(score))
      outcomes[role] = RoleOutcome(float(correct), answer is None, float(score))
    self.history.append(graded)
    self.scores = {}
    last = self.turn == self.max_turns - 1
    team = sum(c for _, c, _ in graded.values()) / len(graded) if last else 0.0
    self.advance()
    return StageResult(outcomes, team_reward=team)

  def expert_response(self, role: str) -> str:
    del role
    return self.checker.expert

  def heuristic_response(self, role: str) -> str | None:
    if not self.history or self.history[-1][role][0] is None:
      return None
    return self.history[-1][role][0]
