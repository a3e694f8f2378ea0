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


def _jaxmarl_episode(inner, key, actions_fn, limit=500):
  """One episode run in jaxmarl itself (`step_env`, no auto-reset): per-transition rewards of
  every agent, done flags, and the key and actions of each transition."""
  _, state = inner.reset(jax.random.fold_in(key, 0))
  step = jax.jit(inner.step_env)
  rewards, dones, keys, actions = [], [], [], []
  for t in range(limit):
    step_key = jax.random.fold_in(key, t + 1)
    acts = actions_fn(jax.random.fold_in(step_key, 7), state)
    _, state, reward, done, _ = step(step_key, state, {a: acts[i] for i, a in
                                                       enumerate(inner.agents)})
    rewards.append([float(reward[a]) for a in inner.agents])
    dones.append(bool(done["__all__"]))
    keys.append(step_key)
    actions.append(acts)
    if dones[-1]:
      break
  return np.array(rewards), dones, keys, actions


def _adapter_episode(env, key, keys, actions):
  state, _ = env.reset(jax.random.fold_in(key, 0))
  step = jax.jit(env.step)
  rewards, dones = [], []
  for k, a in zip(keys, actions):
    state, ts = step(k, state, a)
    rewards.append(float(ts.reward))
    dones.append(bool(ts.done))
  return np.array(rewards), dones


def test_jaxmarl_mpe_episodes_match_jaxmarl():
  """jaxmarl 0.2.0's MPE ends an episode of `max_steps = 25` on its 26th transition: the
  adapter's horizon must cover it, see its done, and sum the agents' rewards (the MPE papers'
  and JaxMARL's return)."""
  jaxmarl = pytest.importorskip("jaxmarl")
  inner = jaxmarl.make("MPE_simple_spread_v3")
  env = envs.marl.make("jaxmarl", env_id="MPE_simple_spread_v3")
  assert (env.num_agents, env.num_actions, inner.max_steps) == (3, 5, 25)
  random_actions = lambda k, s: jax.random.randint(k, (3,), 0, 5)
  for seed in range(3):
    key = jax.random.key(seed)
    rewards, dones, keys, actions = _jaxmarl_episode(inner, key, random_actions)
    assert len(dones) == 26 and dones[-1] and not any(dones[:-1])
    assert env.max_steps == len(dones)
    ours, our_dones = _adapter_episode(env, key, keys, actions)
    assert our_dones == dones
    np.testing.assert_allclose(ours, rewards.sum(1), rtol=1e-6)
  mean_env = envs.marl.make("jaxmarl", env_id="MPE_simple_spread_v3", team_reward="mean")
  ours, _ = _adapter_episode(mean_env, key, keys, actions)
  np.testing.assert_allclose(ours, rewards.mean(1), rtol=1e-6)

  state, ts = jax.jit(env.reset)(jax.random.key(0))
  assert ts.obs.shape == (3, env.obs_dim) and ts.state.shape == (env.state_dim,)
  assert env.state_dim == 3 * env.obs_dim and ts.avail.all()


def test_qmix_rollout_collects_the_last_mpe_transition():
  pytest.importorskip("jaxmarl")
  from algorithms import qmix
  env = envs.marl.make("jaxmarl", env_id="MPE_simple_spread_v3")
  cfg = qmix.make_config(dict(hidden_dim=8))
  params = qmix.init_params(jax.random.key(0), cfg, env)
  episode = jax.jit(lambda k: qmix.rollout(env, params["agent"], k, 1.0))(jax.random.key(1))
  assert float(episode.mask.sum()) == 26 and bool(episode.dones[-1])
  assert not bool(episode.dones[:-1].any()) and float(episode.rewards[-1]) < 0.0


@pytest.mark.slow  # the MPE test checks the same adapter by default
def test_jaxmarl_smax_horizon_and_episodes_match_jaxmarl():
  """SMAX tests its step counter before incrementing it too: with every unit standing still
  (plain SMAX, both teams ours, action 4 = stop) nobody fights and the episode lasts
  max_steps + 1 = 101 transitions in jaxmarl; the heuristic-enemy env, whose random episodes
  end early, must get the same horizon, and its episodes must match jaxmarl's."""
  jaxmarl = pytest.importorskip("jaxmarl")
  from jaxmarl.environments.smax import map_name_to_scenario
  plain = jaxmarl.make("SMAX", scenario=map_name_to_scenario("3m"))
  _, dones, _, _ = _jaxmarl_episode(plain, jax.random.key(0),
                                    lambda k, s: jnp.full((6,), 4, jnp.int32))
  assert len(dones) == plain.max_steps + 1 == 101 and dones[-1]
  assert envs.marl.make("jaxmarl", env_id="SMAX", scenario="3m").max_steps == 101

  smax = envs.marl.make("jaxmarl", env_id="HeuristicEnemySMAX", scenario="3m")
  assert smax.num_agents == 3 and smax.max_steps == 101
  inner = jaxmarl.make("HeuristicEnemySMAX", scenario=map_name_to_scenario("3m"))

  def random_available(k, s):
    avail = inner.get_avail_actions(s)
    logits = jnp.stack([jnp.where(avail[a] > 0, 0.0, -jnp.inf) for a in inner.agents])
    return jax.random.categorical(k, logits).astype(jnp.int32)

  key = jax.random.key(3)
  rewards, dones, keys, actions = _jaxmarl_episode(inner, key, random_available)
  assert dones[-1] and len(dones) <= smax.max_steps
  assert (rewards == rewards[:, :1]).all()  # allies share the team reward
  ours, our_dones = _adapter_episode(smax, key, keys, actions)
  assert our_dones == dones
  np.testing.assert_allclose(ours, rewards.mean(1), rtol=1e-6)
  state, ts = jax.jit(smax.reset)(jax.random.key(0))
  assert ts.state.shape == (smax.state_dim,) and ts.avail.shape == (3, smax.num_actions)
  assert ts.avail.any(-1).all() and not ts.avail.all()  # SMAX masks e.g. attacks out of range


def test_jaxmarl_bad_arguments_are_errors():
  pytest.importorskip("jaxmarl")
  with pytest.raises(ValueError, match="team_reward"):
    envs.marl.make("jaxmarl", env_id="MPE_simple_spread_v3", team_reward="max")
  with pytest.raises(ValueError, match="max_steps"):
    envs.marl.make("jaxmarl", env_id="MPE_simple_spread_v3", max_steps=0)
