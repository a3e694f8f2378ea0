"""MARFT's action- and token-level GAE against numpy loops written from the paper's recursion."""
import numpy as np
import pytest

from algorithms import marft_ppo

GAMMA, LAM = 0.9, 0.8


def _numpy_action_gae(rewards, values, dones, last_values, gamma, lam):
  """Backward over each episode's (t, i) order: V_next is agent i+1's value in the step, the
  first agent's at t+1 after the last one; a done step cuts after its last agent."""
  e, t, n = rewards.shape
  adv = np.zeros_like(rewards)
  for ep in range(e):
    next_value, next_adv = last_values[ep], 0.0
    for step in reversed(range(t)):
      for agent in reversed(range(n)):
        discount = gamma * (0.0 if agent == n - 1 and dones[ep, step] else 1.0)
        delta = rewards[ep, step, agent] + discount * next_value - values[ep, step, agent]
        next_adv = delta + discount * lam * next_adv
        adv[ep, step, agent] = next_adv
        next_value = values[ep, step, agent]
  return adv


def _numpy_token_gae(rewards, values, lengths, dones, last_values, gamma, lam):
  e, t, n, _ = values.shape
  adv = np.zeros_like(values)
  for ep in range(e):
    next_value, next_adv = last_values[ep], 0.0
    for step in reversed(range(t)):
      for agent in reversed(range(n)):
        for j in reversed(range(lengths[ep, step, agent])):
          last = j == lengths[ep, step, agent] - 1
          reward = rewards[ep, step, agent] if last else 0.0
          cut = last and agent == n - 1 and dones[ep, step]
          discount = 0.0 if cut else gamma
          delta = reward + discount * next_value - values[ep, step, agent, j]
          next_adv = delta + discount * lam * next_adv
          adv[ep, step, agent, j] = next_adv
          next_value = values[ep, step, agent, j]
  return adv


def _case(seed, e=3, t=4, n=3, width=5):
  rng = np.random.default_rng(seed)
  rewards = rng.normal(size=(e, t, n)).astype(np.float32)
  values = rng.normal(size=(e, t, n)).astype(np.float32)
  dones = (rng.random((e, t)) < 0.3).astype(np.float32)
  last_values = rng.normal(size=e).astype(np.float32)
  token_values = rng.normal(size=(e, t, n, width)).astype(np.float32)
  lengths = rng.integers(1, width + 1, (e, t, n)).astype(np.int32)
  return rewards, values, dones, last_values, token_values, lengths


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_action_level_gae_matches_the_recursion(seed):
  rewards, values, dones, last_values, _, _ = _case(seed)
  adv, returns = marft_ppo.action_level_gae(rewards, values, dones, last_values, gamma=GAMMA,
                                            lam=LAM)
  want = _numpy_action_gae(rewards, values, dones, last_values, GAMMA, LAM)
  np.testing.assert_allclose(adv, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(returns, want + values, rtol=1e-5, atol=1e-5)


def test_action_level_gae_by_hand():
  """One episode, one step, two agents, lambda 1: agent 0 bootstraps from agent 1's value,
  agent 1 (done) from nothing. A = [r0 + g V1 - V0 + g (r1 - V1), r1 - V1]."""
  rewards = np.array([[[1.0, 2.0]]], np.float32)
  values = np.array([[[0.5, 0.25]]], np.float32)
  adv, _ = marft_ppo.action_level_gae(rewards, values, np.ones((1, 1), np.float32),
                                      np.array([100.0], np.float32), gamma=0.5, lam=1.0)
  np.testing.assert_allclose(adv[0, 0], [1.0 + 0.5 * 0.25 - 0.5 + 0.5 * 1.75, 1.75], rtol=1e-6)
  # Not done: the last agent bootstraps from last_values.
  adv, _ = marft_ppo.action_level_gae(rewards, values, np.zeros((1, 1), np.float32),
                                      np.array([100.0], np.float32), gamma=0.5, lam=1.0)
  np.testing.assert_allclose(adv[0, 0, 1], 2.0 + 50.0 - 0.25, rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_token_level_gae_matches_the_recursion_and_zeros_padding(seed):
  rewards, _, dones, last_values, values, lengths = _case(seed)
  adv, returns = marft_ppo.token_level_gae(rewards, values, lengths, dones, last_values,
                                           gamma=GAMMA, lam=LAM)
  want = _numpy_token_gae(rewards, values, lengths, dones, last_values, GAMMA, LAM)
  np.testing.assert_allclose(adv, want, rtol=1e-5, atol=1e-5)
  valid = np.arange(values.shape[-1]) < lengths[..., None]
  np.testing.assert_allclose(returns, np.where(valid, want + values, 0.0), rtol=1e-5, atol=1e-5)
  assert not np.asarray(adv)[~valid].any()


def test_one_token_actions_reduce_token_level_to_action_level():
  rewards, values, dones, last_values, _, _ = _case(5)
  action, _ = marft_ppo.action_level_gae(rewards, values, dones, last_values, gamma=GAMMA,
                                         lam=LAM)
  token, _ = marft_ppo.token_level_gae(rewards, values[..., None], np.ones(rewards.shape, np.int32),
                                       dones, last_values, gamma=GAMMA, lam=LAM)
  np.testing.assert_allclose(token[..., 0], action, rtol=1e-5, atol=1e-6)


def test_advantage_normalisation_ignores_masked_entries():
  adv = np.array([[1.0, 2.0, 3.0, 100.0], [5.0, -7.0, 0.0, 0.0]], np.float32)
  mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], np.float32)
  got = np.asarray(marft_ppo.normalize_advantages(adv, mask))
  valid = adv[mask > 0]
  want = (valid - valid.mean()) / (valid.std() + 1e-8)
  np.testing.assert_allclose(got[mask > 0], want, rtol=1e-5)
  assert not got[mask == 0].any()


def test_clipped_huber_value_loss_against_numpy():
  rng = np.random.default_rng(0)
  values, old, returns = (rng.normal(scale=8.0, size=(4, 6)).astype(np.float32) for _ in range(3))
  mask = (rng.random((4, 6)) < 0.7).astype(np.float32)

  def huber(x, d):
    return np.where(np.abs(x) <= d, 0.5 * x**2, d * (np.abs(x) - 0.5 * d))

  clipped = old + np.clip(values - old, -0.2, 0.2)
  want = (np.maximum(huber(values - returns, 10.0), huber(clipped - returns, 10.0)) * mask).sum()
  want /= mask.sum()
  got = marft_ppo.clipped_value_loss(values, old, returns, mask, clip=0.2)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert np.abs(values - returns).max() > 10.0  # both Huber branches are exercised


def test_ppo_policy_loss_against_numpy_and_the_kl_threshold():
  rng = np.random.default_rng(1)
  shape = (3, 7)
  logp, old = (rng.normal(scale=0.3, size=shape).astype(np.float32) - 1.0 for _ in range(2))
  adv = rng.normal(size=shape).astype(np.float32)
  entropy = rng.random(shape).astype(np.float32)
  mask = (rng.random(shape) < 0.8).astype(np.float32)
  ratio = np.exp(logp - old)
  surrogate = -np.minimum(ratio * adv, np.clip(ratio, 0.8, 1.2) * adv)
  want = (surrogate * mask).sum() / mask.sum() - 0.01 * (entropy * mask).sum() / mask.sum()
  loss, metrics = marft_ppo.ppo_policy_loss(logp, old, adv, entropy, mask)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  k3 = (ratio - 1.0) - np.log(ratio)  # MARFT's trainer's approximate KL
  np.testing.assert_allclose(metrics["approx_kl"], (k3 * mask).sum() / mask.sum(), rtol=1e-5)
  assert 0 < float(metrics["clip_frac"]) < 1
  # With the whole batch's count, the losses of two row splits sum to the batch's loss.
  halves = [marft_ppo.ppo_policy_loss(logp[rows], old[rows], adv[rows], entropy[rows],
                                      mask[rows], count=mask.sum())[0]
            for rows in (slice(0, 1), slice(1, 3))]
  np.testing.assert_allclose(sum(halves), want, rtol=1e-5)
  kl = float(metrics["approx_kl"])
  assert bool(marft_ppo.kl_exceeded(metrics, kl - 1e-4))
  assert not bool(marft_ppo.kl_exceeded(metrics, kl + 1e-4))


def test_agent_iteration_interval_is_round_robin():
  masks = [np.asarray(marft_ppo.training_agents(step, 3, interval=2)) for step in range(8)]
  assert [int(m.argmax()) for m in masks] == [0, 0, 1, 1, 2, 2, 0, 0]
  assert all(m.sum() == 1 for m in masks)
  np.testing.assert_array_equal(marft_ppo.training_agents(5, 3), [1, 1, 1])
