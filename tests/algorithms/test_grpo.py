"""GRPO / AT-GRPO functions against numpy written out in the test."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algorithms import grpo


def test_dense_group_ids_from_task_role_turn():
  task = np.array([0, 0, 0, 1, 1, 0])
  role = np.array([0, 0, 1, 0, 0, 0])
  turn = np.array([0, 0, 0, 0, 0, 1])
  ids = grpo.dense_group_ids(task, role, turn)
  assert ids[0] == ids[1] and ids[3] == ids[4]
  assert len({ids[0], ids[2], ids[3], ids[5]}) == 4
  assert ids.max() < len(ids)


def test_group_advantages_by_hand():
  rewards = np.array([1.0, 0.0, 0.5, 2.0, 2.0, 7.0], np.float32)
  groups = np.array([0, 0, 0, 1, 1, 2], np.int32)
  got = np.asarray(grpo.group_advantages(jnp.asarray(rewards), jnp.asarray(groups)))
  g0 = rewards[:3]
  expected0 = (g0 - g0.mean()) / (g0.std(ddof=1) + 1e-6)  # std of [1, 0, .5] = 0.5
  np.testing.assert_allclose(got[:3], expected0, rtol=1e-5)
  np.testing.assert_allclose(got[:3], [1.0, -1.0, 0.0], atol=1e-4)
  np.testing.assert_array_equal(got[3:5], [0.0, 0.0])  # zero variance: 0 / (0 + eps)
  assert got[5] == 0.0  # a group of one
  raw = np.asarray(grpo.group_advantages(jnp.asarray(rewards), jnp.asarray(groups),
                                         normalize_std=False))
  np.testing.assert_allclose(raw[:3], [0.5, -0.5, 0.0], atol=1e-6)
  # eps matters when the std is tiny.
  tiny = np.asarray(grpo.group_advantages(jnp.array([0.0, 1e-6]), jnp.array([0, 0]), eps=1e-6))
  std = np.std([0.0, 1e-6], ddof=1)
  np.testing.assert_allclose(tiny, [-0.5e-6 / (std + 1e-6), 0.5e-6 / (std + 1e-6)], rtol=1e-4)


def test_group_filters():
  rewards = jnp.array([1.0, 1.0, 0.0, 1.0, 3.0, 5.0, 2.0])
  groups = jnp.array([0, 0, 1, 1, 2, 2, 3])
  keep = np.asarray(grpo.group_filter_mask(rewards, groups, drop_zero_variance=True))
  np.testing.assert_array_equal(keep, [0, 0, 1, 1, 1, 1, 0])  # group 3 (one row) has no spread
  # Means: g0 1.0, g1 0.5, g2 4.0, g3 2.0 -> dropping half (2 groups) removes g1 and g0.
  keep = np.asarray(grpo.group_filter_mask(rewards, groups, drop_zero_variance=False,
                                           drop_lowest_fraction=0.5))
  np.testing.assert_array_equal(keep, [0, 0, 0, 0, 1, 1, 1])


def _numpy_surrogate(logp, old, adv, eps, c):
  ratio = np.exp(logp - old)
  loss = -np.minimum(ratio * adv, np.clip(ratio, 1 - eps, 1 + eps) * adv)
  if c is not None:
    loss = np.where(adv < 0, np.minimum(loss, -c * adv), loss)
  return loss


@pytest.mark.parametrize("dual_clip", [None, 3.0])
def test_clipped_surrogate_and_gradient_match_numpy(dual_clip):
  rng = np.random.default_rng(0)
  logp = rng.normal(-1.0, 0.5, 200).astype(np.float32)
  old = (logp + rng.normal(0, 0.6, 200)).astype(np.float32)
  adv = rng.normal(0, 1.5, 200).astype(np.float32)
  loss, clipped = grpo.clipped_surrogate(jnp.asarray(logp), jnp.asarray(old), jnp.asarray(adv),
                                         clip_eps=0.2, dual_clip=dual_clip)
  np.testing.assert_allclose(loss, _numpy_surrogate(logp, old, adv, 0.2, dual_clip),
                             rtol=1e-5, atol=1e-6)
  # Gradient w.r.t. logp by central finite differences of the numpy formula.
  grad = jax.grad(lambda lp: grpo.clipped_surrogate(lp, jnp.asarray(old), jnp.asarray(adv),
                                                     clip_eps=0.2, dual_clip=dual_clip)[0].sum())(
      jnp.asarray(logp))
  h = 1e-3
  numeric = (_numpy_surrogate(logp.astype(np.float64) + h, old, adv, 0.2, dual_clip)
             - _numpy_surrogate(logp.astype(np.float64) - h, old, adv, 0.2, dual_clip)) / (2 * h)
  ratio = np.exp(logp - old)
  away_from_kinks = (np.abs(ratio - 0.8) > 0.01) & (np.abs(ratio - 1.2) > 0.01)
  if dual_clip is not None:
    away_from_kinks &= np.abs(ratio * adv + dual_clip * adv) > 0.02
  np.testing.assert_allclose(np.asarray(grad)[away_from_kinks], numeric[away_from_kinks],
                             rtol=1e-2, atol=1e-3)
  # Clipped tokens carry no gradient.
  inside = (ratio > 1.2) & (adv > 0)
  assert np.all(np.asarray(grad)[inside] == 0) and inside.any()
  assert np.asarray(clipped)[inside].all()


def test_clip_higher_and_the_clipped_indicator_by_hand():
  """Asymmetric clip range [1 - 0.2, 1 + 0.28] (DAPO "clip-higher", Yu et al. 2025, Sec. 3.1).
  The indicator marks tokens whose clipped term is the active (gradient-free) one, for either
  sign of the advantage."""
  ratio = np.array([1.25, 1.5, 0.5, 0.5, 1.5, 0.9, 0.75, 4.0], np.float32)
  adv = np.array([1.0, 1.0, 1.0, -1.0, -1.0, -2.0, -2.0, -1.0], np.float32)
  # Per token: -min(rho A, clip(rho, 0.8, 1.28) A); last row then min(., -3 A) (dual clip).
  want_loss = [-1.25, -1.28, -0.5, 0.8, 1.5, 1.8, 1.6, 3.0]
  want_clipped = [0, 1, 0, 1, 0, 0, 1, 0]
  want_grad = [-1.25, 0.0, -0.5, 0.0, 1.5, 1.8, 0.0, 0.0]  # d loss / d logp = -rho A or 0

  def surrogate(logp):
    return grpo.clipped_surrogate(logp, jnp.zeros(8), jnp.asarray(adv), clip_eps=0.2,
                                  clip_eps_high=0.28, dual_clip=3.0)

  loss, clipped = surrogate(jnp.log(jnp.asarray(ratio)))
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
  np.testing.assert_array_equal(clipped, want_clipped)
  grad = jax.grad(lambda lp: surrogate(lp)[0].sum())(jnp.log(jnp.asarray(ratio)))
  np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-6)
  # Symmetric (no clip_eps_high): 1.25 > 1.2 is clipped for A > 0.
  loss, clipped = grpo.clipped_surrogate(jnp.log(jnp.float32(1.25)), jnp.float32(0.0),
                                         jnp.float32(1.0), clip_eps=0.2)
  np.testing.assert_allclose(loss, -1.2, rtol=1e-6)
  assert float(clipped) == 1.0


def test_aggregation_modes():
  values = jnp.array([[1.0, 2.0, 3.0, 0.0], [10.0, 0.0, 0.0, 0.0], [5.0, 5.0, 5.0, 5.0]])
  mask = jnp.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
  np.testing.assert_allclose(grpo.aggregate(values, mask, "token-mean"), (6 + 10) / 4)
  np.testing.assert_allclose(grpo.aggregate(values, mask, "sequence-mean"), (2 + 10) / 2)
  with pytest.raises(ValueError):
    grpo.aggregate(values, mask, "sum")


def test_reward_mixing_kl_and_curriculum():
  np.testing.assert_allclose(grpo.mix_rewards(jnp.array([0.5, -1.0]), jnp.array([1.0, 1.0]),
                                              alpha=0.5), [1.0, -0.5])
  logp, ref = np.array([-1.0, -2.0]), np.array([-1.5, -1.0])
  np.testing.assert_allclose(grpo.low_variance_kl(jnp.asarray(logp), jnp.asarray(ref)),
                             np.exp(ref - logp) - (ref - logp) - 1, rtol=1e-6)
  assert grpo.low_variance_kl(jnp.array(-1.0), jnp.array(-1.0)) == 0.0
  schedule = [grpo.max_turns_at(s, (5, 8, 10), every=100) for s in (1, 100, 101, 200, 201, 999)]
  assert schedule == [5, 5, 8, 8, 10, 10]
