"""QMIX / VDN functions against numpy written out in the test, and the two-step game end to end."""
import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs.marl
from algorithms import qmix
from experiments import qmix as qmix_job
from experiments.configs import qmix_two_step as two_step_config
from marft import trainer
from marft.logging import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _np_relu(x):
  return np.maximum(x, 0.0)


def _np_elu(x):
  return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))


def _np_mix(params, qs, state):
  """Q_tot = elu(q . |W1(s)| + b1(s)) . |W2(s)| + V(s), one sample at a time."""
  p = jax.tree.map(np.asarray, params)
  out = []
  for q, s in zip(qs, state):
    layer = lambda l, x: x @ l["w"] + l["b"]
    w1 = np.abs(layer(p["hyper_w1"][1], _np_relu(layer(p["hyper_w1"][0], s))))
    w1 = w1.reshape(len(q), -1)
    b1 = layer(p["hyper_b1"][0], s)
    hidden = _np_elu(q @ w1 + b1)
    w2 = np.abs(layer(p["hyper_w2"][1], _np_relu(layer(p["hyper_w2"][0], s))))
    v = layer(p["value"][1], _np_relu(layer(p["value"][0], s)))[0]
    out.append(hidden @ w2 + v)
  return np.array(out)


def test_mixer_shapes_and_numpy_formula():
  params = qmix.init_mixer(jax.random.key(0), num_agents=3, state_dim=5, embed_dim=8,
                           hypernet_hidden=16)
  rng = np.random.default_rng(0)
  qs = rng.normal(0, 3, (7, 3)).astype(np.float32)
  state = rng.normal(0, 1, (7, 5)).astype(np.float32)
  q_tot = qmix.mix(params, jnp.asarray(qs), jnp.asarray(state))
  assert q_tot.shape == (7,)
  np.testing.assert_allclose(q_tot, _np_mix(params, qs, state), rtol=1e-5, atol=1e-5)
  # Any leading batch axes: [B, T, N] with [B, T, S] -> [B, T].
  many = qmix.mix(params, jnp.asarray(qs).reshape(7, 1, 3), jnp.asarray(state).reshape(7, 1, 5))
  assert many.shape == (7, 1)
  np.testing.assert_allclose(many[:, 0], q_tot, rtol=1e-6)
  with pytest.raises(AssertionError):
    qmix.mix(params, jnp.zeros((7, 3)), jnp.zeros((6, 5)))


def test_mixer_is_monotonic_in_every_agent_utility():
  params = qmix.init_mixer(jax.random.key(1), num_agents=4, state_dim=6)
  qs = jax.random.normal(jax.random.key(2), (256, 4)) * 5.0
  state = jax.random.normal(jax.random.key(3), (256, 6)) * 2.0
  grad_of = jax.jit(jax.vmap(jax.grad(lambda q, s, p: qmix.mix(p, q[None], s[None])[0]),
                             in_axes=(0, 0, None)))
  grads = grad_of(qs, state, params)
  assert grads.shape == (256, 4)
  assert np.all(np.asarray(grads) >= 0.0)
  assert np.mean(np.asarray(grads) > 0.0) > 0.9  # and not trivially flat
  # Also for random (non-initial) parameters: abs() of the hypernetworks makes it structural.
  noisy = jax.tree.map(lambda x: x + jax.random.normal(jax.random.key(4), x.shape), params)
  grads = grad_of(qs, state, noisy)
  assert np.all(np.asarray(grads) >= 0.0)


def test_vdn_is_the_sum_and_mixers_by_name():
  qs = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)), jnp.float32)
  np.testing.assert_allclose(qmix.vdn(qs), np.asarray(qs).sum(-1), rtol=1e-6)
  mixer = qmix.make_mixer("vdn", 3, 4)
  assert mixer.init(jax.random.key(0)) == {}
  np.testing.assert_allclose(mixer.apply({}, qs, jnp.zeros((5, 4))), np.asarray(qs).sum(-1),
                             rtol=1e-6)
  mixer = qmix.make_mixer("qmix", 3, 4, embed_dim=8)
  params = mixer.init(jax.random.key(0))
  assert mixer.apply(params, qs, jnp.ones((5, 4))).shape == (5,)
  with pytest.raises(ValueError):
    qmix.make_mixer("qtran", 3, 4)


def test_one_step_and_lambda_targets_by_hand():
  rewards = jnp.array([[1.0, 0.0, 2.0], [1.0, 0.0, 2.0], [5.0, 3.0, 9.0]])
  dones = jnp.array([[0, 0, 1], [0, 0, 0], [0, 1, 1]], bool)  # ended / truncated / padded
  next_values = jnp.array([[10.0, 20.0, 30.0], [10.0, 20.0, 30.0], [10.0, 20.0, 99.0]])
  gamma = 0.9
  one_step = np.asarray(qmix.one_step_targets(rewards, dones, next_values, gamma=gamma))
  np.testing.assert_allclose(one_step, [[1 + 9, 0 + 18, 2], [10, 18, 2 + 27], [14, 3, 9]],
                             rtol=1e-6)
  np.testing.assert_allclose(qmix.lambda_returns(rewards, dones, next_values, gamma=gamma,
                                                 td_lambda=0.0), one_step, rtol=1e-6)
  got = np.asarray(qmix.lambda_returns(rewards, dones, next_values, gamma=gamma, td_lambda=0.5))
  # Row 0: y2 = 2; y1 = 0.9 (0.5 * 20 + 0.5 * 2) = 9.9; y0 = 1 + 0.9 (0.5 * 10 + 0.5 * 9.9).
  # Row 1 (truncated, bootstraps at the end): y2 = 2 + 27 = 29; y1 = 0.9 (10 + 14.5) = 22.05;
  #   y0 = 1 + 0.9 (5 + 11.025) = 15.4225.
  # Row 2: the episode ends at step 1, so step 2 (padding, value 99) changes nothing before it.
  np.testing.assert_allclose(got, [[9.955, 9.9, 2.0], [15.4225, 22.05, 29.0],
                                   [5 + 0.9 * (5 + 1.5), 3.0, 9.0]], rtol=1e-6)
  monte_carlo = qmix.lambda_returns(rewards[:1], dones[:1], next_values[:1], gamma=gamma,
                                    td_lambda=1.0)
  np.testing.assert_allclose(monte_carlo, [[1 + 0.9 * 0.9 * 2, 0.9 * 2, 2]], rtol=1e-6)


def test_lambda_returns_match_a_numpy_recursion():
  rng = np.random.default_rng(0)
  rewards = rng.normal(size=(4, 6)).astype(np.float32)
  dones = rng.random((4, 6)) < 0.2
  values = rng.normal(size=(4, 6)).astype(np.float32)
  gamma, lam = 0.97, 0.6
  expected = np.zeros_like(rewards)
  for b in range(4):
    for t in reversed(range(6)):
      bootstrap = values[b, t] if t == 5 else (1 - lam) * values[b, t] + lam * expected[b, t + 1]
      expected[b, t] = rewards[b, t] + gamma * (1 - dones[b, t]) * bootstrap
  got = qmix.lambda_returns(jnp.asarray(rewards), jnp.asarray(dones), jnp.asarray(values),
                            gamma=gamma, td_lambda=lam)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_double_q_picks_the_online_argmax_among_available_actions():
  q_online = jnp.array([[1.0, 5.0, 3.0], [0.0, 0.0, 2.0]])
  q_target = jnp.array([[40.0, 99.0, 30.0], [7.0, 8.0, 9.0]])
  avail = jnp.array([[True, False, True], [True, True, False]])
  # Row 0: action 1 is best online but unavailable -> action 2 (online 3 > 1); target reads 30.
  # Row 1: action 2 unavailable; online ties 0/0 -> the first, action 0; target reads 7.
  got = qmix.double_q_next_values(q_online, q_target, avail, double_q=True)
  np.testing.assert_allclose(got, [30.0, 7.0])
  # Without double Q: the max of the target over available actions.
  np.testing.assert_allclose(qmix.double_q_next_values(q_online, q_target, avail,
                                                       double_q=False), [40.0, 8.0])
  np.testing.assert_array_equal(qmix.masked_argmax(q_online, avail), [2, 0])


def test_epsilon_greedy_and_schedule():
  q = jnp.array([[0.0, 3.0, 1.0, 2.0]] * 4000)
  avail = jnp.array([[True, False, True, True]] * 4000)
  greedy = np.asarray(qmix.epsilon_greedy(jax.random.key(0), q, avail, 0.0))
  assert np.all(greedy == 3)
  uniform = np.asarray(qmix.epsilon_greedy(jax.random.key(1), q, avail, 1.0))
  counts = np.bincount(uniform, minlength=4) / len(uniform)
  assert counts[1] == 0.0
  np.testing.assert_allclose(counts[[0, 2, 3]], 1 / 3, atol=0.03)
  half = np.asarray(qmix.epsilon_greedy(jax.random.key(2), q, avail, 0.5))
  np.testing.assert_allclose(np.mean(half == 3), 0.5 + 0.5 / 3, atol=0.03)
  schedule = [float(qmix.epsilon_schedule(t, 1.0, 0.05, 100)) for t in (0, 50, 100, 1000)]
  np.testing.assert_allclose(schedule, [1.0, 0.525, 0.05, 0.05], rtol=1e-6)


def test_target_updates():
  online, target = {"w": jnp.ones(3)}, {"w": jnp.zeros(3)}
  np.testing.assert_array_equal(
      qmix.update_target(target, online, jnp.int32(199), interval=200)["w"], 0.0)
  np.testing.assert_array_equal(
      qmix.update_target(target, online, jnp.int32(400), interval=200)["w"], 1.0)
  np.testing.assert_allclose(
      qmix.update_target(target, online, jnp.int32(1), interval=200, tau=0.1)["w"], 0.1)


def _episodes(values):
  e = len(values)
  return qmix.Episode(obs=jnp.zeros((e, 2, 1, 1)), state=jnp.zeros((e, 2, 1)),
                      avail=jnp.ones((e, 2, 1, 2), bool), actions=jnp.zeros((e, 1, 1), jnp.int32),
                      rewards=jnp.asarray(values, jnp.float32)[:, None],
                      dones=jnp.ones((e, 1), bool), mask=jnp.ones((e, 1)))


def test_episode_buffer_is_a_ring_and_samples_only_stored_episodes():
  example = jax.tree.map(lambda x: x[0], _episodes([0.0]))
  buffer = qmix.buffer_init(3, example)
  assert buffer.capacity == 3 and int(buffer.size) == 0
  buffer = qmix.buffer_add(buffer, _episodes([1.0, 2.0]))
  assert int(buffer.size) == 2 and int(buffer.position) == 2
  sampled = qmix.buffer_sample(buffer, jax.random.key(0), 500)
  assert set(np.asarray(sampled.rewards[:, 0]).tolist()) == {1.0, 2.0}
  buffer = qmix.buffer_add(buffer, _episodes([3.0, 4.0]))  # 4 overwrites the oldest (1)
  assert int(buffer.size) == 3 and int(buffer.position) == 1
  np.testing.assert_array_equal(buffer.episodes.rewards[:, 0], [4.0, 2.0, 3.0])
  sampled = qmix.buffer_sample(jax.jit(lambda b: b)(buffer), jax.random.key(1), 600)
  assert set(np.asarray(sampled.rewards[:, 0]).tolist()) == {2.0, 3.0, 4.0}


def _np_gru(p, x, h):
  sig = lambda v: 1 / (1 + np.exp(-v))
  xi, hh = x @ p["w_i"] + p["b_i"], h @ p["w_h"] + p["b_h"]
  size = h.shape[-1]
  r = sig(xi[..., :size] + hh[..., :size])
  z = sig(xi[..., size:2 * size] + hh[..., size:2 * size])
  n = np.tanh(xi[..., 2 * size:] + r * hh[..., 2 * size:])
  return (1 - z) * n + z * h


def test_recurrent_agent_matches_a_numpy_gru_and_uses_agent_ids():
  params = qmix.init_agent(jax.random.key(0), "gru", obs_dim=3, num_agents=2, num_actions=4,
                           hidden_dim=8)
  p = jax.tree.map(np.asarray, params)
  obs = np.random.default_rng(0).normal(size=(5, 6, 2, 3)).astype(np.float32)  # [B, T, N, O]
  got = np.asarray(qmix.episode_q_values(params, jnp.asarray(obs)))
  assert got.shape == (5, 6, 2, 4)
  h = np.zeros((5, 2, 8), np.float32)
  for t in range(6):
    inputs = np.concatenate([obs[:, t], np.broadcast_to(np.eye(2), (5, 2, 2))], -1)
    x = np.maximum(inputs @ p["encoder"]["w"] + p["encoder"]["b"], 0)
    h = _np_gru(p["gru"], x, h)
    np.testing.assert_allclose(got[:, t], h @ p["head"]["w"] + p["head"]["b"], rtol=1e-4,
                               atol=1e-5)
  # Shared parameters, identical observations: the agent id still tells the agents apart.
  same = jnp.zeros((1, 1, 2, 3))
  q = np.asarray(qmix.episode_q_values(params, same))
  assert not np.allclose(q[0, 0, 0], q[0, 0, 1])
  ff = qmix.init_agent(jax.random.key(0), "ff", 3, 2, 4, 8)
  assert qmix.episode_q_values(ff, jnp.asarray(obs)).shape == (5, 6, 2, 4)


def test_rollout_pads_steps_after_the_episode_ends():
  env = envs.marl.make("meet_grid", size=3, max_steps=8, view=1)
  params = qmix.init_agent(jax.random.key(0), "gru", env.obs_dim, 2, env.num_actions, 8)
  episodes = jax.jit(jax.vmap(lambda k: qmix.rollout(env, params, k, 1.0)))(
      jax.random.split(jax.random.key(0), 64))
  mask, dones, rewards = (np.asarray(x) for x in (episodes.mask, episodes.dones,
                                                   episodes.rewards))
  assert episodes.obs.shape == (64, 9, 2, env.obs_dim) and episodes.actions.shape == (64, 8, 2)
  lengths = mask.sum(1).astype(int)
  assert lengths.min() >= 1 and (lengths < 8).any()  # some pairs meet early on a 3x3 grid
  for m, d, r, n in zip(mask, dones, rewards, lengths):
    np.testing.assert_array_equal(m, np.arange(8) < n)  # a prefix
    assert d[n - 1] and d[n:].all() and not d[:n - 1].any()
    assert np.all(r[n:] == 0) and np.all(r[:n - 1] == 0)
  # An action is never one the env marked unavailable.
  taken = np.take_along_axis(np.asarray(episodes.avail[:, :-1]),
                             np.asarray(episodes.actions)[..., None], -1)
  assert taken.all()


def _two_step_cfg(mixer, epsilon_finish=1.0, **overrides):
  algo = {k: v for k, v in two_step_config.get_config().algo.to_dict().items()
          if k not in qmix_job.JOB_KEYS}
  return qmix.make_config({**algo, "mixer": mixer, "epsilon_finish": epsilon_finish, **overrides})


def test_two_step_game_uniform_exploration_qmix_gets_8_vdn_gets_7():
  """Table 1 of QMIX: trained on uniform data, QMIX's greedy policy is optimal (8) and
  represents the payoffs; VDN's additive fit prefers the safe 2A (7). Every seed."""
  env = envs.marl.make("two_step")
  seeds = jax.random.split(jax.random.key(0), 4)
  stage, first = env.reset(jax.random.key(0))
  _, in_2b = env.step(jax.random.key(0), stage, jnp.array([1, 0]))
  for mixer, optimum in (("qmix", 8.0), ("vdn", 7.0)):
    cfg = _two_step_cfg(mixer)
    runners, metrics = jax.jit(jax.vmap(qmix.make_train(cfg, env, 1500)))(seeds)
    assert np.all(np.asarray(metrics["epsilon"]) == 1.0)

    @jax.jit
    def evaluate(params, cfg=cfg):
      returns = qmix.greedy_return(env, params["agent"], jax.random.key(0), 1)
      q_1 = qmix.joint_q_table(cfg, params, first.obs, first.state)[1]
      q_2b = qmix.joint_q_table(cfg, params, in_2b.obs, in_2b.state)[1]
      return returns, q_1, q_2b

    returns, q_1, q_2b = (np.asarray(x) for x in jax.vmap(evaluate)(runners.params))
    np.testing.assert_array_equal(returns, [optimum] * 4)
    if mixer == "qmix":  # the monotonic mixer represents the payoffs, in every seed
      np.testing.assert_allclose(q_2b, np.broadcast_to([[0, 1], [1, 8]], (4, 2, 2)), atol=0.15)
      np.testing.assert_allclose(q_1, np.broadcast_to([[6.93, 6.93], [7.92, 7.92]], (4, 2, 2)),
                                 atol=0.15)
    else:  # the least-squares additive fit of [[0, 1], [1, 8]]: 8 looks like 6.5 < 7
      np.testing.assert_allclose(q_2b, np.broadcast_to([[-1.5, 2.5], [2.5, 6.5]], (4, 2, 2)),
                                 atol=0.4)
      assert np.all(q_1[:, 0] > q_1[:, 1])


def _job_config(total_steps, **algo):
  config = two_step_config.get_config()
  config.total_steps = total_steps
  config.checkpoint_every = 2
  config.eval_every = 2
  config.log.wandb_mode = "disabled"
  config.algo.updates_per_step = 5
  config.algo.num_seeds = 2
  config.algo.learning_starts = 8
  config.algo.update(algo)
  return config


def test_job_checkpoints_resumes_exactly_and_equals_one_scan(tmp_path):
  straight = str(tmp_path / "straight")
  resumed = str(tmp_path / "resumed")
  final = trainer.run(_job_config(4), straight, qmix_job.build(_job_config(4), None))
  trainer.run(_job_config(2), resumed, qmix_job.build(_job_config(2), None))
  trainer.run(_job_config(4), resumed, qmix_job.build(_job_config(4), None))
  strip = lambda rs: [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rs]
  assert strip(read_metrics(resumed)) == strip(read_metrics(straight))
  records = read_metrics(straight)
  assert [r["step"] for r in records if "eval/greedy_return" in r] == [0, 2, 4]
  assert {"eval/greedy_return/s0", "eval/greedy_return/s1", "train/loss",
          "train/epsilon"} <= set().union(*records)
  assert int(final.step) == 4 and final.skipped_steps.shape == (2,)
  np.testing.assert_array_equal(final.extra["updates"], [20, 20])
  # Seed i of the job trains from key(seed + i); 4 chunks of 5 updates equal one scan of 20.
  config = _job_config(4)
  keys = qmix_job.seed_keys(config)
  np.testing.assert_array_equal(jax.random.key_data(keys),
                                jax.random.key_data(jnp.stack([jax.random.key(0),
                                                               jax.random.key(1)])))
  train = qmix.make_train(qmix_job.algo_config(config), qmix_job.make_env(config), 20)
  runners, _ = jax.jit(jax.vmap(train))(keys)
  for a, b in zip(jax.tree.leaves(runners.params), jax.tree.leaves(final.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bad_config_is_a_config_error():
  from experiments import common
  for key, value in (("mixer", "qtran"), ("epsilon_finish", 2.0), ("unknown_key", 1)):
    config = _job_config(1)
    with config.unlocked():
      config.algo[key] = value
    with pytest.raises(common.ConfigError):
      qmix_job.build(config, None)


def _np_ff_agent(params, obs):
  """Feed-forward agent Q [..., N, A] of obs [..., N, O] with the id one-hot appended."""
  p = jax.tree.map(np.asarray, params["layers"])
  n = obs.shape[-2]
  x = np.concatenate([obs, np.broadcast_to(np.eye(n), (*obs.shape[:-2], n, n))], -1)
  for layer in p[:-1]:
    x = _np_relu(x @ layer["w"] + layer["b"])
  return x @ p[-1]["w"] + p[-1]["b"]


def _vdn_nets(n, o, a, **cfg):
  """A VDN config and two parameter sets (online, target) for n agents, obs o, actions a."""
  cfg = qmix.make_config(dict(mixer="vdn", hidden_dim=8, gamma=0.9, **cfg))
  env = type("E", (), dict(num_agents=n, obs_dim=o, num_actions=a, state_dim=4))
  return cfg, qmix.init_params(jax.random.key(0), cfg, env), qmix.init_params(jax.random.key(1),
                                                                               cfg, env)


def _np_vdn_td_loss(q, q_target, batch, weight, reward_scale=1.0, gamma=0.9):
  """The weighted mean squared 1-step double-Q TD error of VDN, from per-agent Q [B, T+1, N, A]."""
  taken = np.take_along_axis(q[:, :-1], batch.actions[..., None], -1)[..., 0].sum(-1)
  best = np.argmax(np.where(batch.avail[:, 1:], q[:, 1:], -np.inf), -1)
  next_value = np.take_along_axis(q_target[:, 1:], best[..., None], -1)[..., 0].sum(-1)
  y = reward_scale * batch.rewards + gamma * (1.0 - batch.dones) * next_value
  return np.sum(weight * (taken - y) ** 2) / weight.sum()


@pytest.mark.parametrize("train_terminal,reward_scale", [(True, 1.0), (False, 10.0)])
def test_td_loss_matches_numpy_on_a_hand_built_batch(train_terminal, reward_scale):
  """VDN, 1-step double-Q targets, written out in numpy: the terminal step is dropped from
  the loss when `train_terminal` is False and rewards enter the targets times `reward_scale`."""
  rng = np.random.default_rng(0)
  b, t, n, o, a = 3, 4, 2, 5, 3
  cfg, params, target = _vdn_nets(n, o, a, agent="ff", train_terminal=train_terminal,
                                  reward_scale=reward_scale)
  lengths = np.array([4, 2, 3])
  mask = (np.arange(t)[None] < lengths[:, None]).astype(np.float32)
  dones = np.arange(t)[None] >= lengths[:, None] - 1
  dones[2] = False  # episode 2 is cut at its horizon without a done: bootstrapped
  mask[2] = 1.0
  batch = qmix.Episode(
      obs=rng.normal(size=(b, t + 1, n, o)).astype(np.float32),
      state=rng.normal(size=(b, t + 1, 4)).astype(np.float32),
      avail=rng.random((b, t + 1, n, a)) < 0.7, actions=rng.integers(0, a, (b, t, n)),
      rewards=(rng.normal(size=(b, t)) * mask).astype(np.float32), dones=dones, mask=mask)
  batch = batch.replace(avail=batch.avail | (np.arange(a) == 0))  # one action always available
  loss, _ = qmix.td_loss(params, target, jax.tree.map(jnp.asarray, batch), cfg,
                         lambda p, q, s: jnp.sum(q, -1))

  q = _np_ff_agent(params["agent"], batch.obs)
  q_target = _np_ff_agent(target["agent"], batch.obs)
  weight = mask * (1.0 - dones) if not train_terminal else mask
  np.testing.assert_allclose(float(loss), _np_vdn_td_loss(q, q_target, batch, weight,
                                                          reward_scale), rtol=1e-5)


def test_linear_lr_schedule_counts_gradient_steps_not_updates():
  cfg = qmix.make_config(dict(lr=0.01, lr_schedule="linear", lr_decay_updates=10))
  schedule = qmix.learning_rate(cfg)
  np.testing.assert_allclose([schedule(0), schedule(5), schedule(10), schedule(30)],
                             [0.01, 0.005, 0.0, 0.0], atol=1e-9)
  # Updates before learning_starts take no gradient step, so they do not move the schedule.
  env = envs.marl.make("two_step")
  cfg = qmix.make_config(dict(agent="ff", hidden_dim=8, num_envs=2, batch_size=2,
                              learning_starts=6, buffer_size=16, lr_schedule="linear",
                              lr_decay_updates=100, optimizer="radam"))
  runner, _ = jax.jit(qmix.make_train(cfg, env, 5))(jax.random.key(0))
  counts = [int(leaf) for leaf in jax.tree.leaves(runner.opt_state)
            if jnp.ndim(leaf) == 0 and jnp.issubdtype(leaf.dtype, jnp.integer)]
  assert counts and set(counts) == {3}  # learning from update 3 (6 episodes stored) on
  two_epochs = qmix.make_config({**dataclasses.asdict(cfg), "epochs": 2})
  runner, _ = jax.jit(qmix.make_train(two_epochs, env, 5))(jax.random.key(0))
  counts = [int(leaf) for leaf in jax.tree.leaves(runner.opt_state)
            if jnp.ndim(leaf) == 0 and jnp.issubdtype(leaf.dtype, jnp.integer)]
  assert set(counts) == {6}  # two gradient steps in each of the 3 learning updates
  with pytest.raises(ValueError, match="lr_decay_updates"):
    qmix.make_config(dict(lr_schedule="linear"))
  with pytest.raises(ValueError, match="optimizer"):
    qmix.make_config(dict(optimizer="sgd"))


def test_orthogonal_init_has_orthonormal_weights_times_the_scale():
  cfg = qmix.make_config(dict(init="orthogonal", agent_init_scale=1.0, mixer_init_scale=0.001,
                              hidden_dim=16, mixer_embed_dim=8, hypernet_hidden=32))
  env = type("E", (), dict(num_agents=3, obs_dim=10, num_actions=5, state_dim=30))
  # Several seeds' networks in one vmapped program (this hung with LAPACK's QR on XLA:CPU).
  seeds = jax.jit(jax.vmap(lambda k: qmix.init_params(k, cfg, env)))(
      jax.random.split(jax.random.key(0), 4))
  params = jax.tree.map(lambda x: np.asarray(x[3]), seeds)
  assert not np.allclose(seeds["agent"]["head"]["w"][0], seeds["agent"]["head"]["w"][3])

  def assert_orthogonal(w, scale):
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    np.testing.assert_allclose(gram, scale**2 * np.eye(len(gram)), atol=1e-5 * max(scale, 1e-3))

  for layer in [params["agent"]["encoder"], params["agent"]["head"]]:
    assert_orthogonal(layer["w"], 1.0)
    assert not layer["b"].any()
  for name in ("hyper_w1", "hyper_b1", "hyper_w2", "value"):
    for layer in params["mixer"][name]:
      assert_orthogonal(layer["w"], 0.001)
  for block in np.split(params["agent"]["gru"]["w_h"], 3, -1):  # one orthogonal matrix a gate
    assert_orthogonal(block, 1.0)
  w_i = params["agent"]["gru"]["w_i"]  # lecun normal: variance 1 / fan_in
  assert abs(w_i.var() * 16 - 1.0) < 0.25 and not params["agent"]["gru"]["b_i"].any()
  # The default stays PyTorch's uniform init: every weight within +-1/sqrt(fan_in).
  default = qmix.init_params(jax.random.key(0), qmix.make_config({}), env)
  assert np.abs(np.asarray(default["mixer"]["hyper_b1"][0]["w"])).max() <= 1 / np.sqrt(30)


def test_two_step_game_annealed_exploration_vdn_gets_8_one_seed():
  """The default-run variant of the next test: the first of its four seeds."""
  env = envs.marl.make("two_step")
  cfg = _two_step_cfg("vdn", epsilon_finish=0.05)
  runner, metrics = jax.jit(qmix.make_train(cfg, env, 2000))(
      jax.random.split(jax.random.key(0), 4)[0])
  assert float(np.asarray(metrics["epsilon"])[-1]) == pytest.approx(0.05)
  assert float(qmix.greedy_return(env, runner.params["agent"], jax.random.key(0), 1)) == 8.0


@pytest.mark.slow
def test_two_step_game_annealed_exploration_vdn_gets_8_too():
  env = envs.marl.make("two_step")
  cfg = _two_step_cfg("vdn", epsilon_finish=0.05)
  runners, _ = jax.jit(jax.vmap(qmix.make_train(cfg, env, 2000)))(
      jax.random.split(jax.random.key(0), 4))
  returns = jax.vmap(lambda p: qmix.greedy_return(env, p["agent"], jax.random.key(0), 1))(
      runners.params)
  np.testing.assert_array_equal(returns, [8.0] * 4)


@pytest.mark.slow
def test_launch_train_matrix_game_from_the_command_line(tmp_path):
  """The interface: a payoff table and the mixer from flags; eval/greedy_return is logged."""
  workdir = str(tmp_path)
  command = [sys.executable, "-m", "launch.train",
             "--config=experiments/configs/qmix_matrix.py", f"--workdir={workdir}",
             "--config.env.payoff=[[8,-12,-12],[-12,0,0],[-12,0,0]]",
             "--config.algo.mixer=vdn", "--config.algo.epsilon_start=1.0",
             "--config.algo.epsilon_finish=1.0", "--config.total_steps=4",
             "--config.log.wandb_mode=disabled"]
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert done.returncode == 0, done.stderr[-3000:]
  with open(os.path.join(workdir, "config.json")) as f:
    saved = json.load(f)
  assert saved["env"]["payoff"] == "[[8,-12,-12],[-12,0,0],[-12,0,0]]"
  assert saved["algo"]["mixer"] == "vdn"
  evals = [r for r in read_metrics(workdir) if "eval/greedy_return" in r]
  assert evals and evals[-1]["step"] == 4
  # The greedy joint action's payoff is one of the table's entries.
  assert evals[-1]["eval/greedy_return"] in (8.0, -12.0, 0.0)


def test_qmix_trains_on_a_jaxmarl_env():
  """Runs where the optional `jaxmarl` extra is installed (`pip install -e '.[jaxmarl]'`)."""
  pytest.importorskip("jaxmarl")
  env = envs.marl.make("jaxmarl", env_id="MPE_simple_spread_v3")
  cfg = qmix.make_config(dict(num_envs=2, batch_size=4, learning_starts=2, buffer_size=8,
                              hidden_dim=16, mixer_embed_dim=8, hypernet_hidden=16))
  runner, metrics = jax.jit(qmix.make_train(cfg, env, 2))(jax.random.key(0))
  assert np.isfinite(np.asarray(metrics["loss"])).all()
  assert int(runner.t_env) == 2 * 2 * 26  # MPE episodes last 26 transitions


def test_two_step_table_references_are_least_squares_fits():
  from experiments.tables import qmix_two_step as table
  # QMIX's reference is the optimal Q; VDN's the least-squares sum q1(a1) + q2(a2), computed
  # here with numpy's solver on the one-hot design of the four joint actions.
  design = np.array([[1, 0, 1, 0], [1, 0, 0, 1], [0, 1, 1, 0], [0, 1, 0, 1]], np.float64)
  def additive_fit(table_2x2):
    weights = np.linalg.lstsq(design, np.asarray(table_2x2, np.float64).ravel(), rcond=None)[0]
    return (design @ weights).reshape(2, 2)
  qmix_ref = table.reference_values("qmix", 0.99)
  vdn_ref = table.reference_values("vdn", 0.99)
  np.testing.assert_allclose(qmix_ref["2B"], [[0, 1], [1, 8]])
  np.testing.assert_allclose(qmix_ref["1"], [[6.93, 6.93], [7.92, 7.92]])
  np.testing.assert_allclose(vdn_ref["2B"], additive_fit([[0, 1], [1, 8]]))
  np.testing.assert_allclose(vdn_ref["2A"], 7.0)
  best_2b = additive_fit([[0, 1], [1, 8]]).max()  # 6.5 < 7: VDN prefers 2A
  np.testing.assert_allclose(vdn_ref["1"], additive_fit([[6.93, 6.93], [0.99 * best_2b] * 2]))
  assert vdn_ref["1"][0, 0] > vdn_ref["1"][1, 0]


@pytest.mark.slow  # ~30 s (four compilations); by default test_reproduce.py checks the table
# mechanics and the two tests above the learned values
def test_reproduce_two_step_table_and_reuse_cheap(tmp_path, capsys, monkeypatch):
  """The cheaper variant of the next test: 40 updates a run, one seed: the four runs are
  trained, written as the table's rows beside their closed-form references, and reused."""
  from experiments.tables import qmix_two_step as table
  monkeypatch.setitem(table.SCALES, "tiny", 4)
  get_config = table.two_step_config.get_config

  def fewer_updates():
    config = get_config()
    config.algo.updates_per_step = 10
    config.log.wandb_mode = "disabled"
    return config

  monkeypatch.setattr(table.two_step_config, "get_config", fewer_updates)
  kwargs = dict(scale="tiny", seeds=1, results_dir=str(tmp_path / "results"),
                runs_dir=str(tmp_path / "runs"))
  paths = table.reproduce(**kwargs)
  with open(paths[0]) as f:
    text = f.read()
  assert "40 updates per seed" in text
  for row in ("| QMIX | uniform |", "| QMIX | annealed |", "| VDN | uniform |",
              "| VDN | annealed |"):
    assert row in text
  with open(paths[1]) as f:
    assert len(f.read().splitlines()) > 4 * 9  # every (state, joint action) of every run
  capsys.readouterr()
  assert table.reproduce(**kwargs) == paths
  assert capsys.readouterr().out.count("reuse:") == 4


@pytest.mark.slow
def test_reproduce_two_step_table_and_reuse(tmp_path, capsys):
  from experiments.tables import qmix_two_step as table
  kwargs = dict(scale="tiny", seeds=2, results_dir=str(tmp_path / "results"),
                runs_dir=str(tmp_path / "runs"))
  paths = table.reproduce(**kwargs)
  assert [os.path.basename(p) for p in paths] == ["qmix_two_step.md", "qmix_two_step.csv"]
  with open(paths[0]) as f:
    text = f.read()
  assert "| QMIX | uniform | 8 | 8 | 8.00 |" in text
  assert "| VDN | uniform | 7 | 7 | 7.00 |" in text
  assert "| VDN | annealed | 8 | 8 | 8.00 |" in text
  capsys.readouterr()
  assert table.reproduce(**kwargs) == paths  # the finished runs are reused, not retrained
  assert capsys.readouterr().out.count("reuse:") == 4


def test_vmapped_seeds_skip_the_gradient_steps_before_learning_starts():
  """The learn phase is a `lax.cond` on the update's index, one value for every seed, so vmap
  keeps the branch: before `learning_starts` no gradient step is computed (JaxMARL's QMIX skips
  them the same way; computed and discarded, they made a short SMAX benchmark several times
  slower). Their metrics are 0; the buffer's own count agrees on when learning starts."""
  env = envs.marl.make("two_step")
  cfg = qmix.make_config(dict(agent="ff", hidden_dim=8, num_envs=2, batch_size=2,
                              learning_starts=6, buffer_size=16))
  seeds = jax.random.split(jax.random.key(0), 3)
  runners = jax.vmap(lambda k: qmix.init_runner(cfg, env, k))(seeds)
  episodes = jax.vmap(lambda r, k: jax.vmap(lambda e: qmix.rollout(env, r.params["agent"], e,
                                                                   1.0))(jax.random.split(k, 2))
                      )(runners, seeds)
  learn = jax.vmap(qmix.make_learn(cfg, env), in_axes=(0, 0, 0, None))
  eqns = jax.make_jaxpr(learn)(runners, episodes, seeds, 0).jaxpr.eqns
  # A branch holding the gradient steps' scan (with a per-seed predicate, vmap would turn the
  # cond into a select of both branches' results: no such cond, seen so).
  assert any(e.primitive.name == "cond" and any(
      any(inner.primitive.name == "scan" for inner in branch.jaxpr.eqns)
      for branch in e.params["branches"]) for e in eqns)
  train = jax.vmap(qmix.make_train(cfg, env, 5))
  _, metrics = jax.jit(train)(seeds)
  np.testing.assert_array_equal(metrics["learning"], [[0, 0, 1, 1, 1]] * 3)
  assert not np.asarray(metrics["loss"])[:, :2].any() and np.asarray(metrics["loss"])[:, 2:].all()
  np.testing.assert_array_equal([bool(qmix.learning_starts_at(cfg, u, 2)) for u in range(5)],
                                [False, False, True, True, True])
