"""Steps a workflow with fuzzed responses and checks the workflow contract at every stage."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from marft.rollout.workflow import StageResult, Workflow


def check_messages(messages: Any) -> None:
  assert isinstance(messages, list) and messages
  for message in messages:
    assert message["role"] in ("system", "user", "assistant")
    assert isinstance(message["content"], str)


def check_result(result: StageResult, roles: tuple[str, ...], batch: dict[str, Any]) -> None:
  """Outcomes for exactly the acting roles, finite rewards, and every empty or non-text
  response counted as an invalid action."""
  assert isinstance(result, StageResult)
  assert set(result.outcomes) == set(roles)
  assert math.isfinite(result.team_reward)
  for role, outcome in result.outcomes.items():
    assert math.isfinite(outcome.reward), (role, outcome)
    assert isinstance(outcome.invalid, bool)
    assert outcome.score is None or math.isfinite(outcome.score)
    response = batch.get(role)
    if not isinstance(response, str) or not response.strip():
      assert outcome.invalid, (role, response, outcome)


def drive(workflow: Workflow, responses: Sequence[Any], max_stages: int,
          scores: Sequence[float] = ()) -> int:
  """Acts `responses` (cycled; one per acting role) until the episode ends, at most
  `max_stages` stages; also renders every prompt and the expert and heuristic responses, and
  passes `scores` (cycled) to `observe_scores` when given. Returns the invalid actions."""
  invalid, i = 0, 0
  for _ in range(max_stages):
    if workflow.done:
      break
    roles = workflow.acting_roles()
    for role in roles:
      check_messages(workflow.prompt(role))
      assert isinstance(workflow.expert_response(role), str)
      assert workflow.heuristic_response(role) is None or isinstance(
          workflow.heuristic_response(role), str)
    batch = {}
    for role in roles:
      batch[role] = responses[i % len(responses)] if responses else ""
      i += 1
    if scores:
      workflow.observe_scores({role: scores[j % len(scores)] for j, role in enumerate(roles)})
    result = workflow.act(batch)
    check_result(result, roles, batch)
    invalid += sum(o.invalid for o in result.outcomes.values())
  assert workflow.done, "the episode did not end within its turn limit"
  assert isinstance(workflow.success, bool)
  for name, value in workflow.metrics().items():
    assert math.isfinite(value), name
  assert workflow.final_answer() is None or isinstance(workflow.final_answer(), str)
  return invalid
