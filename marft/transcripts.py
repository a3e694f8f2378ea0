"""Transcript records: one JSON-able dict per sampled action of a rollout.

A job's `batch_fn` returns them in its metrics as `"transcripts"`; the trainer writes them to
`RUN/transcripts.jsonl` (`{"step": N, **record}`) and `launch.inspect` renders them. A record:

  row             the action's row in the rollout batch
  episode         the trajectory it belongs to: the task under tree sampling (each turn's K
                  branches are candidates from one shared state), else the episode
  task, branch, turn (0-based), policy, parent (the row that started a nested episode, or -1)
  role            the acting role's name
  prompt          the text before the response; left out when an earlier record of the same
                  rollout has the same prompt tokens, `prompt_row` then names that record's row
  response        the sampled text (`response_tokens` tokens)
  reward, team_reward, return (the episode's team return), score, invalid: as the credit saw
                  them (a dense PRM reward included)
  success         the episode's outcome (None when the rollout does not report it)
  advantage       the row's advantage (the mean over its response tokens for token-level credit)
  group           the row's credit group (None for an algorithm without groups)
  weight          the row's keep weight in the update
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def wanted(config: Any) -> bool:
  """Whether the run keeps transcripts (`log.transcripts`, default True)."""
  return bool((config.get("log") or {}).get("transcripts", True))


def row_text(tokens: np.ndarray, loss_mask: np.ndarray, tokenizer: Any
             ) -> tuple[list[int], str]:
  """A row's prompt token ids (the tokens before its response; without a response, the tokens
  before the trailing padding) and its decoded response."""
  response = np.flatnonzero(loss_mask > 0)
  if len(response):
    end = int(response[0])
  else:
    kept = np.flatnonzero(tokens != tokenizer.pad_id)
    end = int(kept[-1]) + 1 if len(kept) else 0
  return [int(t) for t in tokens[:end]], tokenizer.decode(tokens[response])


def response_mean(values: np.ndarray, loss_mask: np.ndarray) -> np.ndarray:
  """Per-row mean of token-level `values [R, T]` over each row's response tokens."""
  mask = (np.asarray(loss_mask) > 0).astype(np.float64)
  return (np.asarray(values, np.float64) * mask).sum(1) / np.maximum(mask.sum(1), 1.0)


def records(batch: Any, tokenizer: Any, roles: Sequence[str], *, advantages: np.ndarray,
            weights: np.ndarray, groups: np.ndarray | None = None,
            episodes: Sequence[Mapping[str, Any]] = (), tree: bool = False
            ) -> list[dict[str, Any]]:
  """The records of a rollout's `batch` (a numpy `TurnBatch`), in row order.

  `advantages` is `[R]`, or `[R, T]` at the response positions (token-level credit); `weights`
  `[R]`; `groups` `[R]` or None; `episodes` the rollout's episode summaries
  (`Rollout.transcripts`: task, branch, success) and `tree` whether it was tree-sampled.
  """
  advantages = np.asarray(advantages)
  if advantages.ndim == 2:
    advantages = response_mean(advantages, batch.loss_mask)
  success = {(int(e["task"]), int(e["branch"])): bool(e["success"]) for e in episodes}
  prompt_rows: dict[tuple[int, ...], int] = {}
  out = []
  for row in range(batch.num_rows):
    prompt, response = row_text(batch.tokens[row], batch.loss_mask[row], tokenizer)
    task, branch = int(batch.task_id[row]), int(batch.branch_id[row])
    record = {"row": row, "episode": task if tree else int(batch.episode_id[row]),
              "task": task, "branch": branch, "role": roles[int(batch.role_id[row])],
              "turn": int(batch.turn_id[row]), "policy": int(batch.policy_id[row]),
              "parent": int(batch.parent_id[row])}
    first = prompt_rows.setdefault(tuple(prompt), row)
    if first == row:
      record["prompt"] = tokenizer.decode(prompt)
    else:
      record["prompt_row"] = first
    record |= {"response": response, "response_tokens": int((batch.loss_mask[row] > 0).sum()),
               "reward": float(batch.reward[row]), "team_reward": float(batch.team_reward[row]),
               "return": float(batch.episode_return[row]), "score": float(batch.score[row]),
               "invalid": bool(batch.invalid[row] > 0),
               "success": success.get((task, 0 if tree else branch)),
               "advantage": float(advantages[row]), "weight": float(weights[row]),
               "group": None if groups is None else int(groups[row])}
    out.append(record)
  return out
