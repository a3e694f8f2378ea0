"""Transcript records (`marft.transcripts`) of a rollout batch written out by hand."""
import json

import ml_collections
import numpy as np

from marft import transcripts
from marft.rollout.batch import TurnBatch
from marft.tokenizers import CharTokenizer


def _batch(tokenizer):
  """Row 0: prompt "ab>", response "xy" and the stop token; row 1: the same prompt, response
  "z"; row 2: prompt "c>" and no response (a row of padding after it)."""
  chat = lambda text: [tokenizer.bos_id] + tokenizer.encode(text)
  rows = [(chat("ab>"), tokenizer.encode("xy") + [tokenizer.eos_id]),
          (chat("ab>"), tokenizer.encode("z")), (chat("c>"), [])]
  width = 10
  tokens = np.full((3, width), tokenizer.pad_id, np.int32)
  mask = np.zeros((3, width), np.float32)
  for r, (prompt, response) in enumerate(rows):
    tokens[r, :len(prompt) + len(response)] = prompt + response
    mask[r, len(prompt):len(prompt) + len(response)] = 1.0
  column = lambda *v: np.asarray(v, np.int32)
  value = lambda *v: np.asarray(v, np.float32)
  return TurnBatch(tokens=tokens, loss_mask=mask, behavior_logp=np.zeros_like(mask),
                   policy_id=column(0, 1, 0), role_id=column(0, 1, 1), turn_id=column(0, 0, 1),
                   episode_id=column(0, 1, 3), task_id=column(0, 0, 1),
                   branch_id=column(0, 1, 1), reward=value(1.0, 0.0, 0.5),
                   team_reward=value(0.5, 0.5, 0.0), episode_return=value(2.0, 1.0, 0.0),
                   invalid=value(0, 1, 0), score=value(0.25, 0, 0), parent_id=column(-1, -1, 0))


def test_records_decode_each_row_and_carry_its_credit():
  tokenizer = CharTokenizer()
  batch = _batch(tokenizer)
  advantages = np.zeros(batch.tokens.shape, np.float32)
  advantages[0, 4:7] = [1.0, 3.0, 5.0]  # token-level credit: the row's mean is 3
  advantages[1, 4] = -2.0
  episodes = [{"task": 0, "branch": 0, "success": True}, {"task": 0, "branch": 1,
                                                           "success": False}]
  records = transcripts.records(batch, tokenizer, ("planner", "worker"), advantages=advantages,
                                weights=np.array([1.0, 0.0, 1.0]), groups=np.array([4, 5, 6]),
                                episodes=episodes)
  json.dumps(records)  # plain Python values
  assert [r["response"] for r in records] == ["xy", "z", ""]
  assert records[0]["prompt"] == "ab>" and records[2]["prompt"] == "c>"
  assert "prompt" not in records[1] and records[1]["prompt_row"] == 0  # stored once
  assert [r["response_tokens"] for r in records] == [3, 1, 0]
  assert [r["advantage"] for r in records] == [3.0, -2.0, 0.0]
  assert [r["role"] for r in records] == ["planner", "worker", "worker"]
  assert [r["episode"] for r in records] == [0, 1, 3]
  assert [r["success"] for r in records] == [True, False, None]  # episode 3 is not reported
  assert [r["invalid"] for r in records] == [False, True, False]
  assert [(r["group"], r["weight"], r["parent"]) for r in records] == [
      (4, 1.0, -1), (5, 0.0, -1), (6, 1.0, 0)]
  assert (records[0]["reward"], records[0]["team_reward"], records[0]["return"],
          records[0]["score"]) == (1.0, 0.5, 2.0, 0.25)
  # Tree sampling: a task's branches are candidates of one trajectory, whose outcome is the
  # chosen path's (reported as branch 0).
  tree = transcripts.records(batch, tokenizer, ("planner", "worker"),
                             advantages=np.array([0.5, -0.5, 0.0]), weights=np.ones(3),
                             episodes=episodes[:1], tree=True)
  assert [r["episode"] for r in tree] == [0, 0, 1]
  assert [r["success"] for r in tree] == [True, True, None]
  assert [r["advantage"] for r in tree] == [0.5, -0.5, 0.0] and tree[0]["group"] is None


def test_transcripts_follow_the_log_option():
  config = ml_collections.ConfigDict({"log": {"wandb_mode": "disabled"}})
  assert transcripts.wanted(config)
  config.log.transcripts = False
  assert not transcripts.wanted(config)
