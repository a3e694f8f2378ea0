"""JAX-native cooperative games against payoffs and moves worked out by hand."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs.marl
from envs.marl import matrix, meet_grid


def _step(env, state, actions):
  return env.step(jax.random.key(0), state, jnp.asarray(actions, jnp.int32))


def test_two_step_game_payoffs_by_hand():
  env = envs.marl.make("two_step")
  assert (env.num_agents, env.num_actions, env.max_steps) == (2, 2, 2)
  stage, ts = env.reset(jax.random.key(0))
  np.testing.assert_array_equal(ts.state, [1, 0, 0])
  np.testing.assert_array_equal(ts.obs, [[1, 0, 0], [1, 0, 0]])
  assert ts.avail.all() and not ts.done and ts.reward == 0
  expected = {0: [[7, 7], [7, 7]], 1: [[0, 1], [1, 8]]}  # agent 1's first action -> 2A / 2B
  for first, second in itertools.product(range(2), repeat=2):
    middle, ts = _step(env, stage, [first, second])  # agent 2's first action does not matter
    np.testing.assert_array_equal(ts.state, [0, 1, 0] if first == 0 else [0, 0, 1])
    assert ts.reward == 0 and not ts.done
    for a1, a2 in itertools.product(range(2), repeat=2):
      _, end = _step(env, middle, [a1, a2])
      assert float(end.reward) == expected[first][a1][a2] and end.done
      np.testing.assert_array_equal(end.state, [0, 0, 0])


def test_matrix_games_pay_their_table_for_every_joint_action():
  for payoff in ("climbing", "penalty", "[[8,-12,-12],[-12,0,0],[-12,0,0]]", [[1, 0], [0, 1]]):
    env = envs.marl.make("matrix", payoff=payoff)
    table = matrix.parse_payoff(payoff)
    assert env.num_agents == 2 and env.num_actions == table.shape[0] and env.max_steps == 1
    state, ts = env.reset(jax.random.key(0))
    assert ts.obs.shape == (2, 1) and ts.avail.shape == (2, env.num_actions)
    step = jax.jit(lambda s, a, env=env: env.step(jax.random.key(0), s, a))
    for a1, a2 in itertools.product(range(env.num_actions), repeat=2):
      _, ts = step(state, jnp.array([a1, a2]))
      assert float(ts.reward) == table[a1, a2] and ts.done
  np.testing.assert_array_equal(matrix.parse_payoff("climbing"),
                                [[11, -30, 0], [-30, 7, 6], [0, 0, 5]])
  three = envs.marl.make("matrix", payoff=np.arange(8).reshape(2, 2, 2).tolist())
  assert three.num_agents == 3
  _, ts = _step(three, three.reset(jax.random.key(0))[0], [1, 0, 1])
  assert float(ts.reward) == 5.0  # index (1, 0, 1) of arange(8) in a 2x2x2 table
  for bad in ("[[1, 2], [3]]", "[1, 2, 3]", "[[1, 2, 3], [4, 5, 6]]", "not a table"):
    with pytest.raises(ValueError):
      matrix.parse_payoff(bad)


def test_meet_grid_moves_available_actions_and_meeting():
  env = envs.marl.make("meet_grid", size=4, view=1, max_steps=5)
  assert env.obs_dim == 2 * 4 + 9 and env.state_dim == 2 * 4 * 2 + 1
  state = meet_grid.GridState(positions=jnp.array([[0, 0], [3, 3]], jnp.int32), t=jnp.int32(0))
  _, ts = _step(env, state, [0, 0])
  # Agent 0 in the top-left corner may stay, go down or right; agent 1 (bottom right) up or left.
  np.testing.assert_array_equal(ts.avail, [[1, 0, 1, 0, 1], [1, 1, 0, 1, 0]])
  np.testing.assert_array_equal(ts.obs[0, :8], [1, 0, 0, 0, 1, 0, 0, 0])  # row 0, column 0
  np.testing.assert_array_equal(ts.obs[:, 8:], 0)  # too far apart to see each other
  assert float(ts.reward) == 0 and not ts.done
  # 0 goes down to (1, 0); 1 goes up to (2, 3), then left twice to (2, 1): adjacent diagonally.
  state, ts = _step(env, state, [2, 1])
  np.testing.assert_array_equal(state.positions, [[1, 0], [2, 3]])
  state, ts = _step(env, state, [0, 3])
  state, ts = _step(env, state, [0, 3])
  np.testing.assert_array_equal(state.positions, [[1, 0], [2, 1]])
  window = np.asarray(ts.obs[:, 8:]).reshape(2, 3, 3)
  assert window[0, 2, 2] == 1 and window[0].sum() == 1  # agent 1 is down-right of agent 0
  assert window[1, 0, 0] == 1 and window[1].sum() == 1  # and agent 0 up-left of agent 1
  # The state is every agent's row and column one-hot, then the elapsed time fraction.
  np.testing.assert_allclose(ts.state[-1], 3 / 5)
  state, ts = _step(env, state, [2, 3])  # both move onto (2, 0)
  assert float(ts.reward) == 1.0 and ts.done


def test_meet_grid_time_limit_and_reset():
  env = envs.marl.make("meet_grid", size=5, max_steps=3)
  starts = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), 500))[0].positions
  assert np.all(np.any(np.asarray(starts[:, 0] != starts[:, 1]), -1))  # distinct cells
  assert len({tuple(p.ravel()) for p in np.asarray(starts)}) > 100
  state = meet_grid.GridState(positions=jnp.array([[0, 0], [4, 4]], jnp.int32), t=jnp.int32(0))
  dones = []
  for _ in range(3):
    state, ts = _step(env, state, [0, 0])
    dones.append(bool(ts.done))
  assert dones == [False, False, True] and float(ts.reward) == 0.0
  with pytest.raises(ValueError):
    envs.marl.make("meet_grid", size=1)


def test_unknown_env_is_an_error():
  with pytest.raises(ValueError, match="unknown env"):
    envs.marl.make("starcraft")


def test_jaxmarl_adapter():
  """Runs where the optional `jaxmarl` extra is installed (`pip install -e '.[jaxmarl]'`)."""
  pytest.importorskip("jaxmarl")
  env = envs.marl.make("jaxmarl", env_id="MPE_simple_spread_v3")
  assert (env.num_agents, env.num_actions, env.max_steps) == (3, 5, 25)
  state, ts = jax.jit(env.reset)(jax.random.key(0))
  assert ts.obs.shape == (3, env.obs_dim) and ts.state.shape == (env.state_dim,)
  assert env.state_dim == 3 * env.obs_dim and ts.avail.all()
  state, ts = jax.jit(env.step)(jax.random.key(1), state, jnp.zeros(3, jnp.int32))
  assert ts.reward.shape == () and not ts.done

  smax = envs.marl.make("jaxmarl", env_id="HeuristicEnemySMAX", scenario="3m")
  assert smax.num_agents == 3
  state, ts = jax.jit(smax.reset)(jax.random.key(0))
  assert ts.state.shape == (smax.state_dim,) and ts.avail.shape == (3, smax.num_actions)
  assert ts.avail.any(-1).all() and not ts.avail.all()  # SMAX masks e.g. attacks out of range
  state, ts = jax.jit(smax.step)(jax.random.key(1), state, jnp.argmax(ts.avail, -1))
  assert ts.obs.shape == (3, smax.obs_dim)
