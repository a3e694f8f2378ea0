"""MATPO's credit: rollout advantages and the row -> rollout grouping, against numpy by hand."""
import numpy as np
import pytest

from algorithms import matpo
from experiments.matpo import matpo_credit
from marft.rollout.batch import TurnBatch


def _numpy_advantages(rewards, queries, parents, eps=1e-6):
  """The spec's equation written out: planners normalised within their query (ddof 1, a
  group of one gets 0), each worker its parent's value."""
  out = np.zeros(len(rewards))
  for r in range(len(rewards)):
    if parents[r] >= 0:
      continue
    group = [i for i in range(len(rewards)) if parents[i] < 0 and queries[i] == queries[r]]
    if len(group) > 1:
      values = np.asarray([rewards[i] for i in group], np.float64)
      out[r] = (rewards[r] - values.mean()) / (values.std(ddof=1) + eps)
  for r in range(len(rewards)):
    if parents[r] >= 0:
      out[r] = out[parents[r]]
  return out


def test_rollout_advantages_two_queries_workers_and_a_planner_without_workers():
  # Query 0: planners 0, 1, 2 (planner 2 spawned no worker); query 1: planners 3, 4.
  # Workers: 5, 6 of planner 0; 7 of planner 1; 8, 9 of planner 4. Worker rewards are junk
  # that must be ignored.
  rewards = np.array([0.91, 0.1, 0.46, 1.0, 0.0, 7.0, -3.0, 99.0, 5.0, 0.2], np.float32)
  queries = np.array([0, 0, 0, 1, 1, 0, 0, 0, 1, 1], np.int32)
  parents = np.array([-1, -1, -1, -1, -1, 0, 0, 1, 4, 4], np.int32)
  got = np.asarray(matpo.rollout_advantages(rewards, queries, parents))
  np.testing.assert_allclose(got, _numpy_advantages(rewards, queries, parents), rtol=1e-5,
                             atol=1e-6)
  # Query 1's two planners: (1 - 0.5) / (std_ddof1 = 0.7071) = +-0.7071.
  np.testing.assert_allclose(got[[3, 4]], [0.70710, -0.70710], atol=1e-4)
  assert got[5] == got[6] == got[0] and got[7] == got[1] and got[8] == got[9] == got[4]


def test_rollout_advantages_single_planner_query_and_equal_rewards_give_zero():
  rewards = np.array([0.5, 0.3, 0.3, 2.0], np.float32)
  queries = np.array([0, 1, 1, 0], np.int32)
  parents = np.array([-1, -1, -1, 0], np.int32)
  np.testing.assert_array_equal(np.asarray(matpo.rollout_advantages(rewards, queries, parents)),
                                np.zeros(4))


def test_rollouts_of_rows_groups_planner_turns_and_each_delegation():
  # Episode 0: planner rows 0 (delegates), 3 (delegates), 6 (answers); worker rows 1, 2 (of
  # row 0) and 4, 5 (of row 3). Episode 1: planner rows 7, 9; worker row 8 (of row 7).
  # Episode 2: one planner row, no worker.
  episode = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 2])
  parent = np.array([-1, 0, 0, -1, 3, 3, -1, -1, 7, -1, -1])
  of_row, rollout_parent, rollout_episode = matpo.rollouts_of_rows(episode, parent)
  # Planner rollouts 0, 1, 2 (episodes 0, 1, 2); workers 3 (row 0), 4 (row 3), 5 (row 7).
  np.testing.assert_array_equal(of_row, [0, 3, 3, 0, 4, 4, 0, 1, 5, 1, 2])
  np.testing.assert_array_equal(rollout_parent, [-1, -1, -1, 0, 0, 1])
  np.testing.assert_array_equal(rollout_episode, [0, 1, 2, 0, 0, 1])


def test_rollouts_of_rows_rejects_a_nested_parent():
  with pytest.raises(ValueError, match="top-level"):
    matpo.rollouts_of_rows(np.array([0, 0, 0]), np.array([-1, 0, 1]))


def _batch(task, episode, parent, episode_return):
  n = len(task)
  z = np.zeros(n, np.int32)
  f = np.zeros(n, np.float32)
  return TurnBatch(tokens=np.zeros((n, 4), np.int32), loss_mask=np.zeros((n, 4), np.float32),
                   behavior_logp=np.zeros((n, 4), np.float32), policy_id=z, role_id=z,
                   turn_id=z, episode_id=np.asarray(episode, np.int32),
                   task_id=np.asarray(task, np.int32), branch_id=z, reward=f, team_reward=f,
                   episode_return=np.asarray(episode_return, np.float32), invalid=f, score=f,
                   parent_id=np.asarray(parent, np.int32))


def test_matpo_credit_gives_every_row_its_planner_rollouts_group_advantage():
  # Task 0: episodes 0 (return 1.0, one delegation), 1 (0.1, none); task 1: episodes 2 (0.5)
  # and 3 (0.5): equal returns, advantage 0.
  task = [0, 0, 0, 0, 1, 1, 1]
  episode = [0, 0, 0, 1, 2, 2, 3]
  parent = [-1, 0, -1, -1, -1, 4, -1]
  returns = [1.0, 1.0, 1.0, 0.1, 0.5, 0.5, 0.5]
  advantages, weight = matpo_credit(_batch(task, episode, parent, returns),
                                    type("A", (), {"eps": 1e-6})())
  a = 0.45 / (np.std([1.0, 0.1], ddof=1) + 1e-6)
  np.testing.assert_allclose(advantages, [a, a, a, -a, 0, 0, 0], rtol=1e-5)
  np.testing.assert_array_equal(weight, np.ones(7))
