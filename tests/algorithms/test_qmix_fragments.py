"""QMIX on fragments of restarting envs (`fragment_steps`, JaxMARL's NUM_STEPS slices), against
the two-step game's payoffs and numpy written out here."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs.marl
from algorithms import qmix
from tests.algorithms.test_qmix import _np_gru, _np_vdn_td_loss, _vdn_nets

PAYOFF = {1: np.full((2, 2), 7.0), 2: np.array([[0.0, 1.0], [1.0, 8.0]])}  # stage 2A, 2B


def test_fragment_restarts_the_env_after_every_episode():
  """Two-step episodes last 2 transitions: a 7-step fragment holds three whole episodes and
  the first step of a fourth; every reward is the payoff of the recorded joint action in the
  stage agent 1's first action chose, and every episode starts from state 1 again."""
  env = envs.marl.make("two_step")
  params = qmix.init_agent(jax.random.key(0), "gru", env.obs_dim, 2, env.num_actions, 8)
  fragments = jax.jit(jax.vmap(lambda k: qmix.rollout_fragment(env, params, k, 1.0, 7)))(
      jax.random.split(jax.random.key(1), 16))
  obs, state, actions, rewards, dones, mask = (np.asarray(x) for x in (
      fragments.obs, fragments.state, fragments.actions, fragments.rewards, fragments.dones,
      fragments.mask))
  assert obs.shape == (16, 8, 2, 3) and actions.shape == (16, 7, 2)
  np.testing.assert_array_equal(mask, 1.0)
  np.testing.assert_array_equal(dones, np.broadcast_to([0, 1, 0, 1, 0, 1, 0], (16, 7)))
  for f in range(16):
    for t in range(7):
      stage = 0 if t % 2 == 0 else 1 + actions[f, t - 1, 0]  # 2A / 2B by agent 1's choice
      np.testing.assert_array_equal(state[f, t], np.eye(3)[stage])
      np.testing.assert_array_equal(obs[f, t], np.stack([np.eye(3)[stage]] * 2))
      expected = 0.0 if stage == 0 else PAYOFF[stage][actions[f, t, 0], actions[f, t, 1]]
      assert rewards[f, t] == expected
  np.testing.assert_array_equal(state[:, 7], np.eye(3)[1 + actions[:, 6, 0]])  # the next state
  assert len({tuple(a.ravel()) for a in actions}) > 1  # epsilon 1: the fragments differ


def _np_fragment_q(p, obs, dones):
  """Per-agent Q [B, T+1, N, A] of a GRU agent whose hidden state restarts at 0 on the step
  after each done."""
  b, t1, n, _ = obs.shape
  h = np.zeros((b, n, p["gru"]["w_h"].shape[0]), np.float32)
  out = []
  for t in range(t1):
    if t > 0:
      h = np.where(dones[:, t - 1, None, None], 0.0, h)
    inputs = np.concatenate([obs[:, t], np.broadcast_to(np.eye(n), (b, n, n))], -1)
    x = np.maximum(inputs @ p["encoder"]["w"] + p["encoder"]["b"], 0)
    h = _np_gru(p["gru"], x, h)
    out.append(h @ p["head"]["w"] + p["head"]["b"])
  return np.stack(out, 1)


@pytest.mark.parametrize("train_terminal", [True, False])
def test_fragment_td_loss_matches_numpy(train_terminal):
  """VDN on GRU agents, 1-step double-Q targets over fragments with episode ends inside: the
  recurrent state restarts after each end, an end is not bootstrapped (the next observation
  belongs to the next episode), the step after it is, and the fragment's last step bootstraps
  from the stored next observation."""
  rng = np.random.default_rng(0)
  b, t, n, o, a = 3, 6, 2, 4, 3
  cfg, params, target = _vdn_nets(n, o, a, agent="gru", train_terminal=train_terminal,
                                  fragment_steps=t)
  dones = np.zeros((b, t), bool)
  dones[0, [1, 4]] = True
  dones[1, 2] = True  # fragment 2 has no end inside
  batch = qmix.Episode(
      obs=rng.normal(size=(b, t + 1, n, o)).astype(np.float32),
      state=rng.normal(size=(b, t + 1, 4)).astype(np.float32),
      avail=(rng.random((b, t + 1, n, a)) < 0.7) | (np.arange(a) == 0),
      actions=rng.integers(0, a, (b, t, n)), rewards=rng.normal(size=(b, t)).astype(np.float32),
      dones=dones, mask=np.ones((b, t), np.float32))
  loss, _ = qmix.td_loss(params, target, jax.tree.map(jnp.asarray, batch), cfg,
                         lambda p, q, s: jnp.sum(q, -1))

  p, p_target = (jax.tree.map(np.asarray, x["agent"]) for x in (params, target))
  q = _np_fragment_q(p, batch.obs, dones)
  q_target = _np_fragment_q(p_target, batch.obs, dones)
  weight = np.ones((b, t)) if train_terminal else 1.0 - dones
  np.testing.assert_allclose(float(loss), _np_vdn_td_loss(q, q_target, batch, weight), rtol=1e-5)


def test_fragment_training_counts_every_step_and_reports_return_per_episode():
  """An update stores `num_envs` fragments of `fragment_steps` transitions each; the logged
  return is the reward per ended episode (with epsilon 1 on the two-step game: the mean
  payoff of uniform play, 38/8 = 4.75, within 4 standard errors)."""
  env = envs.marl.make("two_step")
  cfg = qmix.make_config(dict(agent="gru", hidden_dim=8, num_envs=64, fragment_steps=6,
                              batch_size=4, learning_starts=64, buffer_size=256,
                              epsilon_finish=1.0))
  runner, metrics = jax.jit(qmix.make_train(cfg, env, 3))(jax.random.key(0))
  assert int(runner.t_env) == 3 * 64 * 6
  assert runner.buffer.episodes.rewards.shape == (256, 6)
  np.testing.assert_array_equal(metrics["learning"], [1, 1, 1])
  assert np.isfinite(np.asarray(metrics["loss"])).all()
  returns = np.asarray(metrics["episode_return"])
  exact = (7.0 * 4 + 0.0 + 1.0 + 1.0 + 8.0) / 8  # agent 1 picks 2A or 2B, then a uniform cell
  se = np.sqrt(np.var([7.0] * 4 + [0.0, 1.0, 1.0, 8.0]) / (64 * 3))
  assert np.all(np.abs(returns - exact) < 4 * se)
