"""Deliberately imperfect demonstrations: the expert's responses, some of them corrupted.

A tiny base model pretrained on these starts RL weak but not hopeless, as a small base LLM
does. Corrupted responses are also executed, so the demonstrations visit the states that
mistakes lead to.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from marft.rollout.workflow import Workflow


def corrupt(response: str, alphabet: str, rng: np.random.Generator) -> str:
  """One random edit of `response`: replace, insert or delete a character from `alphabet`."""
  chars = list(response)
  edit = rng.integers(3) if chars else 1
  position = int(rng.integers(len(chars) + (edit == 1)))
  if edit == 0:
    chars[position] = alphabet[rng.integers(len(alphabet))]
  elif edit == 1:
    chars.insert(position, alphabet[rng.integers(len(alphabet))])
  else:
    del chars[position]
  return "".join(chars)


def demonstrations(workflows: Sequence[Workflow], tokenizer: Any, *, corruption: float,
                   seed: int, alphabet: str, heuristic: float = 0.0
                   ) -> list[tuple[list[int], list[int]]]:
  """Plays every workflow to the end with expert responses; returns `(prompt_ids,
  response_ids + stop)` for every action taken.

  Each response is, with probability `heuristic`, the workflow's myopic `heuristic_response`
  instead (where it has one), and then, with probability `corruption`, randomly edited.
  """
  rng = np.random.default_rng(seed)
  examples = []
  for workflow in workflows:
    workflow = workflow.clone()
    while not workflow.done:
      responses = {}
      for role in workflow.acting_roles():
        response = workflow.expert_response(role)
        if heuristic and rng.random() < heuristic:
          response = workflow.heuristic_response(role) or response
        if rng.random() < corruption:
          response = corrupt(response, alphabet, rng)
        responses[role] = response
        examples.append((tokenizer.chat(workflow.prompt(role)),
                         tokenizer.encode(response) + [tokenizer.eos_id]))
      workflow.act(responses)
  return examples


def sft_rows(examples: Sequence[tuple[list[int], list[int]]], width: int, pad_id: int
             ) -> dict[str, np.ndarray]:
  """Right-padded `prompt + response` rows with the loss on the response tokens only.

  Examples longer than `width` are dropped (their prompt is too long for the model's budget).
  """
  kept = [(p, r) for p, r in examples if len(p) + len(r) <= width]
  tokens = np.full((len(kept), width), pad_id, np.int32)
  loss_mask = np.zeros((len(kept), width), np.float32)
  for i, (prompt, response) in enumerate(kept):
    tokens[i, :len(prompt)] = prompt
    tokens[i, len(prompt):len(prompt) + len(response)] = response
    loss_mask[i, len(prompt):len(prompt) + len(response)] = 1.0
  return {"tokens": tokens, "loss_mask": loss_mask}
