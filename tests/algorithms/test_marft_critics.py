"""MARFT's critics: per-role heads, the mixed team value, decomposed credit, and the toy where
only one role decides the reward."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algorithms import marft_ppo
from experiments import credit_toy


def _random_heads(critic, params, seed):
  """Gives every head a random output layer (a fresh head predicts 0) and returns them as
  numpy (kernel, bias) pairs of a linear head."""
  rng = np.random.default_rng(seed)
  heads = params["heads"]
  kernel = rng.normal(size=heads["out"]["kernel"].value.shape).astype(np.float32)
  bias = rng.normal(size=heads["out"]["bias"].value.shape).astype(np.float32)
  heads["out"]["kernel"].value = jnp.asarray(kernel)
  heads["out"]["bias"].value = jnp.asarray(bias)
  return kernel, bias


@pytest.mark.parametrize("kind", ["shared", "per_agent"])
def test_head_values_read_each_roles_own_head(kind):
  critic = marft_ppo.make_critic(kind, 3, 5)
  params = marft_ppo.init_critic(critic, jax.random.key(0))
  kernel, bias = _random_heads(critic, params, 1)
  x = np.random.default_rng(2).normal(size=(4, 3, 5)).astype(np.float32)
  roles = np.broadcast_to(np.arange(3), (4, 3))
  got = marft_ppo.head_values(critic, params, jnp.asarray(x), jnp.asarray(roles))
  head = roles if kind == "per_agent" else np.zeros_like(roles)
  want = np.einsum("erd,erd->er", x, kernel[head][..., 0]) + bias[head][..., 0]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Token-level features [E, N, L, D] with roles [E, N].
  tokens = np.random.default_rng(3).normal(size=(4, 3, 2, 5)).astype(np.float32)
  got = marft_ppo.head_values(critic, params, jnp.asarray(tokens), jnp.asarray(roles))
  want = np.einsum("erld,erd->erl", tokens, kernel[head][..., 0]) + bias[head]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_qmix_critic_is_monotonic_in_every_roles_value():
  critic = marft_ppo.make_critic("qmix", 3, 6, embed_dim=4, hypernet_hidden=8)
  params = marft_ppo.init_critic(critic, jax.random.key(0))
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.normal(scale=3.0, size=(64, 3)), jnp.float32)
  s = jnp.asarray(rng.normal(size=(64, 6)), jnp.float32)
  weights = np.asarray(marft_ppo.mixing_weights(critic, params, q, s))
  assert (weights >= 0).all() and (weights > 0).any()
  for i in range(3):  # the gradient is the finite difference of Q_tot
    h = 1e-2
    bump = jnp.zeros(3).at[i].set(h)
    diff = (marft_ppo.mixed_value(critic, params, q + bump, s)
            - marft_ppo.mixed_value(critic, params, q - bump, s)) / (2 * h)
    np.testing.assert_allclose(weights[:, i], diff, rtol=2e-2, atol=1e-3)
  vdn = marft_ppo.make_critic("vdn", 3, 6)
  np.testing.assert_allclose(marft_ppo.mixing_weights(vdn, marft_ppo.init_critic(
      vdn, jax.random.key(0)), q, s), 1.0)


def test_team_lambda_returns_against_numpy():
  rng = np.random.default_rng(0)
  rewards = rng.normal(size=(3, 5)).astype(np.float32)
  q_tot = rng.normal(size=(3, 5)).astype(np.float32)
  dones = np.zeros((3, 5), np.float32)
  dones[0, 2] = dones[1, 4] = dones[2, 4] = 1.0
  gamma, lam = 0.9, 0.7
  want = np.zeros_like(rewards)
  for e in range(3):
    later = 0.0
    for t in reversed(range(5)):
      next_q = q_tot[e, t + 1] if t + 1 < 5 else 0.0
      later = rewards[e, t] + gamma * (1 - dones[e, t]) * ((1 - lam) * next_q + lam * later)
      want[e, t] = later
  got = marft_ppo.team_lambda_returns(rewards, q_tot, dones, gamma=gamma, lam=lam)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_mixed_credit_is_each_roles_weighted_utility_gap():
  critic = marft_ppo.make_critic("qmix", 2, 4, embed_dim=3, hypernet_hidden=5)
  params = marft_ppo.init_critic(critic, jax.random.key(1))
  _random_heads(critic, params, 4)
  rng = np.random.default_rng(5)
  feats = {"obs": rng.normal(size=(2, 3, 2, 4)), "act": rng.normal(size=(2, 3, 2, 4)),
           "state": rng.normal(size=(2, 3, 4))}
  feats = {k: jnp.asarray(v, jnp.float32) for k, v in feats.items()}
  out = marft_ppo.critic_outputs(critic, params, feats)
  mask = np.ones((2, 3, 2), np.float32)
  mask[1, 2] = 0.0  # a step that did not happen
  rewards = rng.normal(size=(2, 3, 2)).astype(np.float32)
  dones = np.zeros((2, 3), np.float32)
  dones[0, 2] = dones[1, 1] = 1.0
  adv, targets = marft_ppo.critic_credit(critic, out, rewards, dones, mask, gamma=0.9, lam=0.5)
  q, b, w = (np.asarray(out[k]) for k in ("q", "b", "weights"))
  np.testing.assert_allclose(adv, w * (q - b) * mask, rtol=1e-5, atol=1e-6)
  team = (rewards * mask).sum(-1)
  np.testing.assert_allclose(targets[0, 2], team[0, 2], rtol=1e-5)  # done: no bootstrap
  next_q = float(out["q_tot"][0, 2])
  want = team[0, 1] + 0.9 * (0.5 * next_q + 0.5 * team[0, 2])
  np.testing.assert_allclose(targets[0, 1], want, rtol=1e-5)


def test_bad_critic_kinds_and_role_counts_are_errors():
  with pytest.raises(ValueError, match="critic.kind='mappo'"):
    marft_ppo.make_critic("mappo", 2, 4)
  with pytest.raises(ValueError, match="at least one role"):
    marft_ppo.make_critic("shared", 0, 4)


def test_mixed_critics_put_the_credit_on_the_deciding_role():
  """Two parallel roles, only one role's answer sets the reward (either role, 2 seeds each): the
  VDN and QMIX critics give it nearly all the advantage mass, while MARFT's GAE over the agents'
  order with a shared critic gives the other role almost the same credit (share ~ 1 / (1 +
  gamma lambda))."""
  for kind, low, high in (("vdn", 0.9, 1.01), ("qmix", 0.9, 1.01), ("shared", 0.4, 0.6)):
    for decider in (0, 1):
      for seed in range(2):
        got = credit_toy.credit_share(jax.random.key(seed), kind=kind, decider=decider,
                                      steps=150)
        assert low < float(got["credit_share"]) < high, (kind, decider, seed, got)
        assert float(got["credit_corr"]) > 0.9, (kind, decider, seed, got)
