"""AgentPRM / InversePRM functions against hand-computed numbers and numpy written in the test."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algorithms.prm import agentprm


def test_mc_step_targets_one_successful_episode_by_hand():
  targets = agentprm.mc_step_targets([(["a", "b", "c"], True)], gamma=0.95)
  # Steps remaining 2, 1, 0: Q = 0.95^2 = 0.9025, 0.95, 1; target (Q + 1) / 2.
  assert targets.keys() == {"a", "b", "c"}
  np.testing.assert_allclose([targets["a"], targets["b"], targets["c"]],
                             [0.95125, 0.975, 1.0], rtol=1e-12)


def test_mc_step_targets_key_shared_by_a_success_and_a_failure():
  episodes = [(["x", "k", "y"], True), (["k", "z", "w", "v"], False)]
  targets = agentprm.mc_step_targets(episodes, gamma=0.95)
  # k: 1 step remaining in the success (+0.95), 3 in the failure (-0.95^3 = -0.857375);
  # Q = (0.95 - 0.857375) / 2 = 0.0463125, target (Q + 1) / 2 = 0.52315625.
  np.testing.assert_allclose(targets["k"], 0.52315625, rtol=1e-12)
  np.testing.assert_allclose(targets["z"], (1 - 0.9025) / 2, rtol=1e-12)  # Q = -0.95^2
  assert targets["v"] == 0.0 and targets["y"] == 1.0  # last steps: Q = -1 and +1


def test_mc_step_targets_key_visited_twice_in_one_episode_counts_twice():
  targets = agentprm.mc_step_targets([(["s", "k", "t", "k"], True)], gamma=0.95)
  # k at 2 steps remaining (0.9025) and at 0 (1): Q = 0.95125, target 0.975625. Counting only
  # the first visit would give 0.95125, only the last 1.0.
  np.testing.assert_allclose(targets["k"], 0.975625, rtol=1e-12)
  assert len(targets) == 3


def test_mc_step_targets_discount_by_steps_remaining_not_from_start():
  success = agentprm.mc_step_targets([(["a", "b", "c", "d"], True)], gamma=0.5)
  # Q = 0.5^3, 0.5^2, 0.5, 1 -> targets 0.5625, 0.625, 0.75, 1. Discounting by the steps from
  # the start would give the first step Q = 1 (target 1) and the last 0.125 (target 0.5625).
  assert [success[k] for k in "abcd"] == [0.5625, 0.625, 0.75, 1.0]
  failure = agentprm.mc_step_targets([(["a", "b", "c", "d"], False)], gamma=0.5)
  assert [failure[k] for k in "abcd"] == [0.4375, 0.375, 0.25, 0.0]


def test_mc_step_targets_gamma_one_graded_outcomes_and_empty_episodes():
  episodes = [(["a", "b"], True), (["b", "c"], False), ([], True), (["d"], 0.75)]
  targets = agentprm.mc_step_targets(episodes, gamma=1.0)
  # gamma = 1: every step gets the outcome r = 2s - 1 undiscounted.
  assert targets == {"a": 1.0, "b": 0.5, "c": 0.0, "d": 0.75}
  assert agentprm.mc_step_targets([([], False)]) == {}


def test_mc_step_targets_match_a_list_of_returns():
  rng = np.random.default_rng(0)
  episodes = [(list(rng.integers(0, 6, rng.integers(0, 7))), float(rng.random()))
              for _ in range(40)]
  gamma = 0.9
  returns = {}  # every visit's return, listed, then averaged
  for keys, s in episodes:
    for i, key in enumerate(keys):
      returns.setdefault(key, []).append((2 * s - 1) * gamma**(len(keys) - 1 - i))
  targets = agentprm.mc_step_targets(episodes, gamma=gamma)
  assert targets.keys() == returns.keys()
  for key, values in returns.items():
    np.testing.assert_allclose(targets[key], (np.mean(values) + 1) / 2, rtol=1e-12)


def _numpy_bce(z, y):
  p = 1 / (1 + np.exp(-z))
  return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def test_prm_loss_matches_numpy_and_analytic_gradient():
  rng = np.random.default_rng(1)
  logits = rng.normal(0, 2, (3, 7)).astype(np.float32)
  targets = rng.random((3, 7)).astype(np.float32)
  mask = (rng.random((3, 7)) < 0.4).astype(np.float32)
  mask[0, 0] = 1
  targets[mask == 0] = np.nan  # padding: must not leak into the loss or its gradient
  count = mask.sum()
  bce = np.where(mask > 0, _numpy_bce(logits.astype(np.float64), np.nan_to_num(targets)), 0.0)
  loss = agentprm.prm_loss(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(mask))
  np.testing.assert_allclose(loss, bce.sum() / count, rtol=1e-5)
  grad = jax.grad(agentprm.prm_loss)(jnp.asarray(logits), jnp.asarray(targets),
                                     jnp.asarray(mask))
  sigmoid = 1 / (1 + np.exp(-logits.astype(np.float64)))
  want = np.where(mask > 0, sigmoid - np.nan_to_num(targets), 0.0) / count
  np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-7)


def test_prm_loss_by_hand_and_finite_at_extreme_logits():
  logits = jnp.array([[0.0, 50.0, -50.0, 50.0]])
  targets = jnp.array([[0.3, 1.0, 1.0, 0.3]])
  # BCE = log(1 + e^z) - y z: log 2; ~0; 50; 50 - 15 = 35.
  per_step = [np.log(2.0), 0.0, 50.0, 35.0]
  for i, want in enumerate(per_step):
    mask = jnp.zeros((1, 4)).at[0, i].set(1.0)
    np.testing.assert_allclose(agentprm.prm_loss(logits, targets, mask), want, atol=1e-5)
  loss, grad = jax.value_and_grad(agentprm.prm_loss)(logits, targets, jnp.ones((1, 4)))
  np.testing.assert_allclose(loss, sum(per_step) / 4, rtol=1e-5)
  np.testing.assert_allclose(grad, [[(0.5 - 0.3) / 4, 0.0, -0.25, 0.7 / 4]], atol=1e-6)
  assert agentprm.prm_loss(logits, targets, jnp.zeros((1, 4))) == 0.0  # empty mask


def _numpy_dpo(pc, pr, rc, rr, beta):
  margin = beta * ((pc - rc) - (pr - rr))
  return np.mean(-np.log(1 / (1 + np.exp(-margin)))), margin


def test_dpo_loss_matches_numpy_metrics_and_gradient():
  rng = np.random.default_rng(2)
  pc, pr, rc, rr = (rng.normal(-30, 10, 6).astype(np.float32) for _ in range(4))
  beta = 0.03
  loss, metrics = agentprm.dpo_loss(*map(jnp.asarray, (pc, pr, rc, rr)), beta=beta)
  want, margin = _numpy_dpo(*(x.astype(np.float64) for x in (pc, pr, rc, rr)), beta)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(metrics["reward_accuracy"], np.mean(margin > 0))
  np.testing.assert_allclose(metrics["reward_margin"], margin.mean(), rtol=1e-4, atol=1e-6)
  # dL/d log pi(y_w) = -beta sigmoid(-margin) / P < 0; dL/d log pi(y_l) is its negative.
  grads = jax.grad(lambda c, r: agentprm.dpo_loss(c, r, jnp.asarray(rc), jnp.asarray(rr),
                                                  beta=beta)[0], argnums=(0, 1))(
      jnp.asarray(pc), jnp.asarray(pr))
  want_grad = -beta / (1 + np.exp(margin)) / 6
  np.testing.assert_allclose(grads[0], want_grad, rtol=1e-4)
  np.testing.assert_allclose(grads[1], -want_grad, rtol=1e-4)
  assert np.all(np.asarray(grads[0]) < 0) and np.all(np.asarray(grads[1]) > 0)


def test_dpo_loss_is_log_two_at_equal_differences():
  pc, rc = jnp.array([-5.0, -12.0]), jnp.array([-7.0, -10.0])
  pr, rr = jnp.array([-3.0, -1.0]), jnp.array([-5.0, 1.0])  # pr - rr == pc - rc
  loss, metrics = agentprm.dpo_loss(pc, pr, rc, rr, beta=0.03)
  np.testing.assert_allclose(loss, np.log(2.0), rtol=1e-6)
  assert metrics["reward_accuracy"] == 0.0 and metrics["reward_margin"] == 0.0
  # One pair, margin (2 - (-1)) * 0.5 = 1.5: -log sigmoid(1.5) = log(1 + e^-1.5) = 0.2014133.
  loss, metrics = agentprm.dpo_loss(jnp.array([0.0]), jnp.array([-1.0]), jnp.array([-2.0]),
                                    jnp.array([0.0]), beta=0.5)
  np.testing.assert_allclose(loss, 0.2014133, rtol=1e-6)
  assert metrics["reward_accuracy"] == 1.0
  np.testing.assert_allclose(metrics["reward_margin"], 1.5)


def test_prm_pairs_choose_the_higher_score_and_drop_ties():
  scores = jnp.array([[0.2, 0.7], [0.9, 0.1], [0.5, 0.5], [-1.0, -0.5]])
  chosen, valid = agentprm.prm_pairs(scores)
  np.testing.assert_array_equal(chosen, [1, 0, 0, 1])
  np.testing.assert_array_equal(valid, [True, True, False, True])
  assert chosen.dtype == jnp.int32 and valid.dtype == jnp.bool_


def test_shaped_targets_by_hand_and_telescoping():
  got = agentprm.shaped_targets(jnp.array([0.5, -0.2]), jnp.array([0.2, 0.1]),
                                jnp.array([0.4, 0.0]), gamma=0.95)
  np.testing.assert_allclose(got, [0.5 + 0.38 - 0.2, -0.2 - 0.1], rtol=1e-6)
  # Along a trajectory s_0..s_T (V_ref(s_T) = 0), sum_t gamma^t (shaped - Q) = -V_ref(s_0).
  gamma = 0.9
  v = np.array([0.3, -0.4, 0.8, 0.1, 0.0], np.float32)
  q = np.array([0.2, 0.5, -0.1, 0.7], np.float32)
  shaped = np.asarray(agentprm.shaped_targets(jnp.asarray(q), jnp.asarray(v[:-1]),
                                              jnp.asarray(v[1:]), gamma=gamma))
  np.testing.assert_allclose(np.sum(gamma**np.arange(4) * (shaped - q)), -v[0], atol=1e-6)


def test_inverse_prm_reward_by_hand_and_gradients():
  q, q_next = jnp.array([1.0, 0.5, 2.0]), jnp.array([0.4, 1.0, 3.0])
  terminal = jnp.array([0.0, 0.0, 1.0])
  # 1 - 0.5 * 0.4 = 0.8; 0.5 - 0.5 * 1 = 0; terminal: 2 (the next Q is dropped).
  np.testing.assert_allclose(agentprm.inverse_prm_reward(q, q_next, terminal, gamma=0.5),
                             [0.8, 0.0, 2.0], rtol=1e-6)
  np.testing.assert_allclose(
      agentprm.inverse_prm_reward(q, q_next, jnp.array([False, False, True]), gamma=0.5),
      [0.8, 0.0, 2.0], rtol=1e-6)
  reward_sum = lambda a, b: agentprm.inverse_prm_reward(a, b, terminal, gamma=0.5).sum()
  dq, dq_next = jax.grad(reward_sum, argnums=(0, 1))(q, q_next)
  np.testing.assert_allclose(dq, [1.0, 1.0, 1.0])
  np.testing.assert_allclose(dq_next, [-0.5, -0.5, 0.0])


def test_inverse_prm_loss_balanced_matches_numpy_and_gradient():
  rng = np.random.default_rng(3)
  expert = rng.normal(0.5, 2, 5).astype(np.float32)
  policy = rng.normal(-0.5, 2, 11).astype(np.float32)
  loss = agentprm.inverse_prm_loss(jnp.asarray(expert), jnp.asarray(policy))
  e, p = expert.astype(np.float64), policy.astype(np.float64)
  want = 0.5 * _numpy_bce(e, 1.0).mean() + 0.5 * _numpy_bce(p, 0.0).mean()
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  # Class sizes do not matter: three copies of the expert set give the same loss (a plain BCE
  # over the pooled 5 + 11 transitions would change).
  tripled = agentprm.inverse_prm_loss(jnp.asarray(np.tile(expert, 3)), jnp.asarray(policy))
  np.testing.assert_allclose(tripled, loss, rtol=1e-6)
  pooled = np.concatenate([_numpy_bce(e, 1.0), _numpy_bce(p, 0.0)]).mean()
  assert abs(pooled - want) > 1e-3
  np.testing.assert_allclose(agentprm.inverse_prm_loss(jnp.zeros(3), jnp.zeros(7)), np.log(2.0),
                             rtol=1e-6)
  ge, gp = jax.grad(agentprm.inverse_prm_loss, argnums=(0, 1))(jnp.asarray(expert),
                                                               jnp.asarray(policy))
  np.testing.assert_allclose(ge, -0.5 / (1 + np.exp(e)) / 5, rtol=1e-4)  # -sigmoid(-z) / 2E
  np.testing.assert_allclose(gp, 0.5 / (1 + np.exp(-p)) / 11, rtol=1e-4)  # sigmoid(z) / 2P


def test_best_of_n_argmax_with_ties_to_the_lowest_index():
  assert int(agentprm.best_of_n(jnp.array([0.1, 0.9, 0.9, 0.3]))) == 1
  scores = np.random.default_rng(4).normal(size=(5, 16)).astype(np.float32)
  scores[2, [3, 9]] = 10.0
  got = agentprm.best_of_n(jnp.asarray(scores))
  np.testing.assert_array_equal(got, np.argmax(scores, axis=1))
  assert got[2] == 3 and got.dtype == jnp.int32


@pytest.mark.parametrize("name", ["prm_loss", "dpo_loss", "prm_pairs", "shaped_targets",
                                  "inverse_prm_reward", "inverse_prm_loss", "best_of_n"])
def test_jit_matches_eager(name):
  rng = np.random.default_rng(5)
  x = lambda *shape: jnp.asarray(rng.normal(size=shape).astype(np.float32))
  args = {"prm_loss": (x(2, 5), jnp.asarray(rng.random((2, 5)), jnp.float32),
                       jnp.asarray(rng.random((2, 5)) < 0.5, jnp.float32)),
          "dpo_loss": (x(4), x(4), x(4), x(4)),
          "prm_pairs": (x(6, 2),),
          "shaped_targets": (x(3), x(3), x(3)),
          "inverse_prm_reward": (x(3), x(3), jnp.array([0.0, 1.0, 0.0])),
          "inverse_prm_loss": (x(3), x(5)),
          "best_of_n": (x(4, 16),)}[name]
  fn = getattr(agentprm, name)
  for jitted, eager in zip(jax.tree_util.tree_leaves(jax.jit(fn)(*args)),
                           jax.tree_util.tree_leaves(fn(*args))):
    np.testing.assert_allclose(jitted, eager, rtol=1e-6)
