"""MAPoRL's credit assignment and verifier utilities (`algorithms/maporl.py`), each checked
against an independent loop written here from the paper's equations, or against numbers
worked out by hand."""
import itertools
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algorithms import maporl as _maporl


# The functions under test, jitted: one compile per shape is much faster than eager dispatch.
maporl = types.SimpleNamespace(
    influence_reward=jax.jit(_maporl.influence_reward, static_argnames="gamma"),
    collaboration_incentives=jax.jit(_maporl.collaboration_incentives, static_argnums=1),
    discussion_rewards=jax.jit(_maporl.discussion_rewards,
                               static_argnames=("gamma", "alphas", "penalty")),
    token_rewards=jax.jit(_maporl.token_rewards, static_argnames="kl_coef"),
    response_gae=jax.jit(_maporl.response_gae, static_argnames=("gamma", "lam")),
    whiten_per_group=jax.jit(_maporl.whiten_per_group, static_argnums=3),
    verifier_loss=jax.jit(_maporl.verifier_loss),
    balance_by_question=_maporl.balance_by_question,
    roc_auc=_maporl.roc_auc,
)

ALPHAS = (1.0, 2.0, 4.0, 8.0)  # a0..a3: distinct powers of two, so every term is identifiable


# ------------------------------------------------------------------------- references


def influence_ref(scores, gamma):
  """R(t,i) = [V(t,i) + sum_{t'>t} gamma^(t'-t) mean_j V(t',j)] / sum_{t'>=t} gamma^(t'-t)."""
  scores = np.asarray(scores, np.float64)
  e_, t_, a_ = scores.shape
  out = np.zeros_like(scores)
  for e in range(e_):
    for t in range(t_):
      for i in range(a_):
        num, den = scores[e, t, i], 1.0
        for tp in range(t + 1, t_):
          w = gamma ** (tp - t)
          num += w * sum(scores[e, tp, j] for j in range(a_)) / a_
          den += w
        out[e, t, i] = num / den
  return out


def _state(values):
  """'R' (others right), 'W' (others wrong) or 'T' (a tie) from the others' correctness."""
  mean = sum(values) / len(values)
  return "R" if mean > 0.5 else "W" if mean < 0.5 else "T"


def incentives_ref(correct, alphas):
  a0, a1, a2, a3 = alphas
  c = np.asarray(correct)
  e_, t_, n = c.shape
  out = np.zeros(c.shape, np.float64)
  for e in range(e_):
    for i in range(n):
      def others(t):
        return _state([c[e, t, j] for j in range(n) if j != i])
      # Revision into turn t (t >= 2 one-based; index 1..T-1 here).
      for t in range(1, t_):
        prev, cur = c[e, t - 1, i] == 1, c[e, t, i] == 1
        if prev == cur:
          continue
        if n == 1:
          out[e, t, i] += a1 if cur else -a1
          continue
        o = others(t - 1)
        if cur:  # wrong -> right
          out[e, t, i] += {"R": a0, "W": a1, "T": 0.0}[o]
        else:  # right -> wrong
          out[e, t, i] -= {"W": a0, "R": a1, "T": 0.0}[o]
      # Influence at turn t < T: the others' change from t to t+1.
      if n > 1:
        for t in range(t_ - 1):
          before, after = others(t), others(t + 1)
          mine_right = c[e, t, i] == 1
          if before == "W" and after == "R":
            out[e, t, i] += a3 if mine_right else a2
          elif before == "R" and after == "W":
            out[e, t, i] -= a3 if not mine_right else a2
  return out


# ------------------------------------------------------------------- influence reward


@pytest.mark.parametrize("shape", [(3, 4, 2), (2, 5, 3), (4, 3, 1), (2, 1, 3), (1, 6, 4)])
def test_influence_reward_matches_loop(shape):
  rng = np.random.default_rng(sum(shape))
  scores = rng.uniform(0, 1, shape).astype(np.float32)
  for gamma in (0.0, 0.3, 0.7, 1.0):
    got = np.asarray(maporl.influence_reward(jnp.asarray(scores), gamma=gamma))
    assert got.shape == shape and got.dtype == np.float32
    np.testing.assert_allclose(got, influence_ref(scores, gamma), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 0.3, 1.0])
def test_influence_reward_single_turn_is_the_score(gamma):
  scores = np.random.default_rng(1).uniform(0, 1, (3, 1, 4)).astype(np.float32)
  got = np.asarray(maporl.influence_reward(jnp.asarray(scores), gamma=gamma))
  np.testing.assert_allclose(got, scores, rtol=1e-6)


def test_influence_reward_gamma_zero_is_the_score():
  scores = np.random.default_rng(2).uniform(0, 1, (2, 5, 3)).astype(np.float32)
  got = np.asarray(maporl.influence_reward(jnp.asarray(scores), gamma=0.0))
  np.testing.assert_allclose(got, scores, rtol=1e-6)


def test_influence_reward_last_turn_is_the_score():
  scores = np.random.default_rng(3).uniform(0, 1, (2, 4, 3)).astype(np.float32)
  got = np.asarray(maporl.influence_reward(jnp.asarray(scores), gamma=0.5))
  np.testing.assert_allclose(got[:, -1], scores[:, -1], rtol=1e-6)


def test_influence_reward_by_hand():
  # V[t][i], T=3 turns, A=2 agents; the team's mean is 0.5 at every turn. (Not jitted.)
  scores = jnp.asarray([[[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]])
  got = np.asarray(_maporl.influence_reward(scores, gamma=0.3))[0]
  # Turn 1: (V + .3*.5 + .09*.5) / (1 + .3 + .09).
  assert got[0, 0] == pytest.approx((1 + 0.3 * 0.5 + 0.09 * 0.5) / 1.39, rel=1e-6)
  assert got[0, 1] == pytest.approx((0 + 0.3 * 0.5 + 0.09 * 0.5) / 1.39, rel=1e-6)
  # Turn 2: (.5 + .3*.5) / 1.3 = .5; turn 3: the scores themselves.
  np.testing.assert_allclose(got[1], [0.5, 0.5], rtol=1e-6)
  np.testing.assert_allclose(got[2], [0.0, 1.0], atol=1e-7)


# -------------------------------------------------------------- collaboration incentives


def incentives(c, alphas=ALPHAS):
  return np.asarray(maporl.collaboration_incentives(jnp.asarray(c, jnp.float32), alphas))


@pytest.mark.parametrize("turns, expected", [
    # c[t][i] for 2 agents and 2 turns. Agent 1's revision (added at turn 2) and agent 2's
    # influence (the other agent = agent 1 changes; added at turn 1).
    # wrong -> right, the other was right: +a0; agent 2 right and the other turned right: +a3.
    ([[0, 1], [1, 1]], [[0, 8], [1, 0]]),
    # wrong -> right, the other was wrong: +a1; agent 2 wrong and the other turned right: +a2.
    ([[0, 0], [1, 0]], [[0, 4], [2, 0]]),
    # right -> wrong, the other was wrong: -a0; agent 2 wrong and the other turned wrong: -a3.
    ([[1, 0], [0, 0]], [[0, -8], [-1, 0]]),
    # right -> wrong, the other was right: -a1; agent 2 right and the other turned wrong: -a2.
    ([[1, 1], [0, 1]], [[0, -4], [-2, 0]]),
    # No change: nothing.
    ([[1, 0], [1, 0]], [[0, 0], [0, 0]]),
    ([[1, 1], [1, 1]], [[0, 0], [0, 0]]),
])
def test_incentives_each_case_two_agents(turns, expected):
  got = incentives([turns])
  np.testing.assert_array_equal(got[0], np.asarray(expected, np.float32))


def test_incentives_both_agents_revise_at_once():
  # Both swap: agent 1 wrong->right with the other right at t-1 (+a0); agent 2 right->wrong
  # with the other wrong at t-1 (-a0). Influence at turn 1: agent 1 (wrong) sees the other turn
  # wrong (-a3); agent 2 (right) sees the other turn right (+a3).
  got = incentives([[[0, 1], [1, 0]]])[0]
  np.testing.assert_array_equal(got, [[-8, 8], [1, -1]])


def test_incentives_three_turns_sequence():
  # Agent 1: 0 -> 1 -> 1, agent 2: 0 -> 0 -> 1.
  # Turn 2: agent 1 fixed with the other wrong (+a1=2); turn 3: agent 2 fixed with the other
  # right (+a0=1). Influence turn 1: agent 2 (wrong) sees the other turn right (+a2=4);
  # turn 2: agent 1 (right) sees the other turn right (+a3=8).
  got = incentives([[[0, 0], [1, 0], [1, 1]]])[0]
  np.testing.assert_array_equal(got, [[0, 4], [2 + 8, 0], [0, 1]])


def test_incentives_tie_of_others_gives_nothing():
  # 3 agents; agent 1's others at turn 1 are (1, 0): a tie, so its revision earns nothing.
  fixed = incentives([[[0, 1, 0], [1, 1, 0]]])[0]
  np.testing.assert_array_equal(fixed, np.zeros((2, 3)))
  broke = incentives([[[1, 1, 0], [0, 1, 0]]])[0]
  np.testing.assert_array_equal(broke, np.zeros((2, 3)))
  # Others going tie -> right or right -> tie is no turn either.
  np.testing.assert_array_equal(incentives([[[0, 1, 1], [0, 1, 0]]])[0][0], [0, 0, 0])


def test_incentives_three_agents_others_exclude_self():
  # Agent 1 fixes with both others right at turn 1 (+a0); agents 2 and 3 see (0,1)->(1,1) for
  # their others: a tie to right, no influence.
  got = incentives([[[0, 1, 1], [1, 1, 1]]])[0]
  np.testing.assert_array_equal(got, [[0, 0, 0], [1, 0, 0]])
  # Agent 3 breaks while both others are wrong (-a0); agents 1, 2 (wrong) see their others go
  # (0,1) -> (0,0): tie to wrong, nothing.
  got = incentives([[[0, 0, 1], [0, 0, 0]]])[0]
  np.testing.assert_array_equal(got, [[0, 0, 0], [0, 0, -1]])
  # Four agents: agents 2, 3 fix; agent 1's others go from all wrong to 2/3 right, agent 1 is
  # right: +a3 at turn 1. Agent 4 (wrong) sees its others (1,0,0) -> (1,1,1): +a2.
  # Agents 2, 3: others at turn 1 are (1,0,0): wrong, so +a1 each; their others go
  # (1,0,0) -> (1,1,0): wrong -> right, and they were wrong: +a2 each at turn 1.
  got = incentives([[[1, 0, 0, 0], [1, 1, 1, 0]]])[0]
  np.testing.assert_array_equal(got, [[8, 4, 4, 4], [0, 2, 2, 0]])


def test_incentives_single_agent_only_a1():
  got = incentives([[[0], [1], [0], [0], [1]]])[0, :, 0]
  np.testing.assert_array_equal(got, [0, 2, -2, 0, 2])


def test_incentives_single_turn_is_zero():
  c = np.random.default_rng(0).integers(0, 2, (4, 1, 3))
  np.testing.assert_array_equal(incentives(c), np.zeros((4, 1, 3)))


@pytest.mark.parametrize("agents, turns", [(1, 4), (2, 4), (3, 3), (4, 2), (5, 4), (3, 1)])
def test_incentives_random_vs_loop(agents, turns):
  rng = np.random.default_rng(agents * 10 + turns)
  c = rng.integers(0, 2, (16, turns, agents))
  got = incentives(c)
  assert got.shape == c.shape and got.dtype == np.float32
  np.testing.assert_array_equal(got, incentives_ref(c, ALPHAS))
  alphas = (0.3, -1.5, 2.25, 0.7)
  np.testing.assert_allclose(incentives(c, alphas), incentives_ref(c, alphas), atol=1e-5)


@pytest.mark.parametrize("alphas", [(1.0, 2.0, 3.0), (1.0,) * 5, ()])
def test_incentives_wrong_number_of_alphas(alphas):
  with pytest.raises(ValueError):
    _maporl.collaboration_incentives(jnp.zeros((1, 2, 2)), alphas)


# ---------------------------------------------------------------- discussion rewards


def test_discussion_rewards_vs_reference():
  rng = np.random.default_rng(7)
  shape = (6, 3, 3)
  scores = rng.uniform(0, 1, shape).astype(np.float32)
  correct = rng.integers(0, 2, shape).astype(np.float32)
  invalid = (rng.uniform(size=shape) < 0.25).astype(np.float32)
  got = np.asarray(maporl.discussion_rewards(jnp.asarray(scores), jnp.asarray(correct),
                                             jnp.asarray(invalid), gamma=0.4, alphas=ALPHAS,
                                             penalty=-10.0))
  expected = influence_ref(scores, 0.4) + incentives_ref(correct, ALPHAS)
  expected = np.where(invalid == 1, -10.0, expected)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  assert (got[invalid == 1] == -10.0).all()
  # The default penalty is -10, the default alphas zero.
  default = np.asarray(maporl.discussion_rewards(jnp.asarray(scores), jnp.asarray(correct),
                                                 jnp.asarray(invalid), gamma=0.4))
  np.testing.assert_allclose(default, np.where(invalid == 1, -10.0, influence_ref(scores, 0.4)),
                             rtol=1e-5, atol=1e-6)
  other = np.asarray(maporl.discussion_rewards(jnp.asarray(scores), jnp.asarray(correct),
                                               jnp.asarray(invalid), penalty=-3.5))
  assert (other[invalid == 1] == -3.5).all()


def test_invalid_answer_score_still_counts_for_the_others():
  # 2 agents, 2 turns; agent 2's turn-2 answer is invalid with verifier score 0.8.
  scores = np.asarray([[[0.2, 0.4], [0.6, 0.8]]], np.float32)
  correct = np.zeros_like(scores)
  invalid = np.asarray([[[0, 0], [0, 1]]], np.float32)
  got = np.asarray(maporl.discussion_rewards(jnp.asarray(scores), jnp.asarray(correct),
                                             jnp.asarray(invalid), gamma=0.5))[0]
  # Turn 1: (V + .5 * mean(.6, .8)) / 1.5, the invalid answer's score .8 inside the mean.
  np.testing.assert_allclose(got[0], [(0.2 + 0.5 * 0.7) / 1.5, (0.4 + 0.5 * 0.7) / 1.5],
                             rtol=1e-6)
  np.testing.assert_allclose(got[1], [0.6, -10.0], rtol=1e-6)
  # Changing the invalid answer's score moves the others' earlier rewards, not its own.
  scores2 = scores.copy()
  scores2[0, 1, 1] = 0.0
  got2 = np.asarray(maporl.discussion_rewards(jnp.asarray(scores2), jnp.asarray(correct),
                                              jnp.asarray(invalid), gamma=0.5))[0]
  np.testing.assert_allclose(got2[0], [(0.2 + 0.5 * 0.3) / 1.5, (0.4 + 0.5 * 0.3) / 1.5],
                             rtol=1e-6)
  assert got2[1, 1] == -10.0


# -------------------------------------------------------------------- token rewards


def token_rewards_ref(scores, kl, mask, kl_coef):
  r_, l_ = kl.shape
  out = np.zeros((r_, l_))
  for r in range(r_):
    valid = [l for l in range(l_) if mask[r, l] > 0]
    for l in valid:
      out[r, l] = -kl_coef * kl[r, l]
    if valid:
      out[r, valid[-1]] += scores[r]
  return out


def test_token_rewards():
  rng = np.random.default_rng(4)
  lengths = [3, 0, 6, 1, 5]
  mask = np.asarray([[1.0] * n + [0.0] * (6 - n) for n in lengths], np.float32)
  kl = rng.normal(size=mask.shape).astype(np.float32)  # garbage at padding too
  scores = np.asarray([1.5, 7.0, -10.0, 0.25, 0.0], np.float32)
  got = np.asarray(maporl.token_rewards(jnp.asarray(scores), jnp.asarray(kl), jnp.asarray(mask),
                                        kl_coef=0.1))
  np.testing.assert_allclose(got, token_rewards_ref(scores, kl, mask, 0.1), rtol=1e-5,
                             atol=1e-6)
  assert (got[mask == 0] == 0).all()
  assert (got[1] == 0).all()  # the empty row gets nothing, not even its score
  # By hand: row 3 is one token: -0.1 * kl + 0.25.
  assert got[3, 0] == pytest.approx(-0.1 * kl[3, 0] + 0.25, rel=1e-5)
  # With kl 0 the only reward is the score on the last token.
  zero = np.asarray(maporl.token_rewards(jnp.asarray(scores), jnp.zeros_like(kl),
                                         jnp.asarray(mask)))
  expected = np.zeros_like(mask)
  for r, n in enumerate(lengths):
    if n:
      expected[r, n - 1] = scores[r]
  np.testing.assert_array_equal(zero, expected)


def test_token_rewards_default_kl_coef():
  mask = np.ones((1, 3), np.float32)
  kl = np.asarray([[1.0, 2.0, 3.0]], np.float32)
  got = np.asarray(maporl.token_rewards(jnp.asarray([2.0]), jnp.asarray(kl), jnp.asarray(mask)))
  np.testing.assert_allclose(got, [[-0.002, -0.004, 2.0 - 0.006]], rtol=1e-5)


# --------------------------------------------------------------------------- GAE


def gae_ref(rewards, values, mask, gamma, lam):
  r_, l_ = rewards.shape
  adv, ret = np.zeros((r_, l_)), np.zeros((r_, l_))
  for r in range(r_):
    n = int(mask[r].sum())
    a_next = 0.0
    for l in reversed(range(n)):
      v_next = values[r, l + 1] if l + 1 < n else 0.0
      delta = rewards[r, l] + gamma * v_next - values[r, l]
      a_next = delta + gamma * lam * a_next
      adv[r, l] = a_next
      ret[r, l] = a_next + values[r, l]
  return adv, ret


@pytest.mark.parametrize("gamma, lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0), (0.5, 0.0)])
def test_response_gae_vs_loop(gamma, lam):
  rng = np.random.default_rng(5)
  lengths = [5, 0, 1, 7, 3]
  mask = np.asarray([[1.0] * n + [0.0] * (7 - n) for n in lengths], np.float32)
  rewards = rng.normal(size=mask.shape).astype(np.float32)  # garbage at padding
  values = rng.normal(size=mask.shape).astype(np.float32) * 3  # garbage at padding
  adv, ret = maporl.response_gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(mask),
                                 gamma=gamma, lam=lam)
  adv, ret = np.asarray(adv), np.asarray(ret)
  ref_adv, ref_ret = gae_ref(rewards, values, mask, gamma, lam)
  np.testing.assert_allclose(adv, ref_adv, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ret, ref_ret, rtol=1e-5, atol=1e-5)
  assert (adv[mask == 0] == 0).all() and (ret[mask == 0] == 0).all()


def test_response_gae_by_hand():
  # One row of 2 tokens, rewards (0, 1), values (.5, .25), gamma 1, lambda .5:
  # delta_1 = 1 + 0 - .25 = .75, A_1 = .75; delta_0 = 0 + .25 - .5 = -.25,
  # A_0 = -.25 + .5 * .75 = .125. Returns A + V: .625, 1.0.
  adv, ret = maporl.response_gae(jnp.asarray([[0.0, 1.0, 9.0]]), jnp.asarray([[0.5, 0.25, 9.0]]),
                                 jnp.asarray([[1.0, 1.0, 0.0]]), gamma=1.0, lam=0.5)
  np.testing.assert_allclose(np.asarray(adv), [[0.125, 0.75, 0.0]], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(ret), [[0.625, 1.0, 0.0]], rtol=1e-6)


# ------------------------------------------------------------------------ whitening


def whiten_ref(x, mask, groups, num_groups, eps=1e-8):
  out = np.zeros(x.shape)
  for g in range(num_groups):
    cells = [(r, l) for r in range(x.shape[0]) if groups[r] == g
             for l in range(x.shape[1]) if mask[r, l] > 0]
    if not cells:
      continue
    vals = np.asarray([x[c] for c in cells], np.float64)
    mean = vals.mean()
    var = vals.var(ddof=1) if len(vals) > 1 else 0.0
    for c in cells:
      out[c] = (x[c] - mean) / math.sqrt(var + eps)
  return out


def test_whiten_per_group_vs_loop_and_padding_independence():
  rng = np.random.default_rng(6)
  lengths = [4, 2, 0, 5, 1, 3, 5]
  groups = np.asarray([0, 1, 1, 0, 3, 1, 0], np.int32)  # group 2 empty, group 3 one entry
  mask = np.asarray([[1.0] * n + [0.0] * (5 - n) for n in lengths], np.float32)
  x = (rng.normal(size=mask.shape) * 2 + 1).astype(np.float32)
  got = np.asarray(maporl.whiten_per_group(jnp.asarray(x), jnp.asarray(mask),
                                           jnp.asarray(groups), 4))
  np.testing.assert_allclose(got, whiten_ref(x, mask, groups, 4), rtol=1e-4, atol=1e-5)
  assert (got[mask == 0] == 0).all()
  assert got[4, 0] == 0.0  # the group with a single entry
  # Garbage at padding changes nothing.
  x2 = np.where(mask > 0, x, rng.normal(size=x.shape) * 1e3).astype(np.float32)
  got2 = np.asarray(maporl.whiten_per_group(jnp.asarray(x2), jnp.asarray(mask),
                                            jnp.asarray(groups), 4))
  np.testing.assert_array_equal(got, got2)
  # Each group's whitened masked entries have mean 0 and unbiased variance ~1.
  for g in (0, 1):
    vals = got[(groups == g)[:, None] & (mask > 0)]
    assert abs(vals.mean()) < 1e-5 and vals.var(ddof=1) == pytest.approx(1.0, rel=1e-4)


def test_whiten_by_hand_unbiased():
  # One group, entries 1, 2, 3 (and padding 100): mean 2, unbiased var 1 -> -1, 0, 1.
  got = maporl.whiten_per_group(jnp.asarray([[1.0, 2.0], [3.0, 100.0]]),
                                jnp.asarray([[1.0, 1.0], [1.0, 0.0]]), jnp.asarray([0, 0]), 1)
  np.testing.assert_allclose(np.asarray(got), [[-1.0, 0.0], [1.0, 0.0]], atol=1e-6)


# --------------------------------------------------------------------- verifier loss


def bce_ref(logits, labels, mask):
  total, count, hits = 0.0, 0.0, 0.0
  for r in range(logits.shape[0]):
    y = float(labels[r])
    for l in range(logits.shape[1]):
      if mask[r, l] > 0:
        z = float(logits[r, l])
        p = 1.0 / (1.0 + math.exp(-z))
        total += -y * math.log(p) - (1 - y) * math.log(1 - p)
        count += 1
        hits += (z > 0) == (y > 0.5)
  return total / count, hits / count


def test_verifier_loss_vs_loop():
  rng = np.random.default_rng(8)
  logits = (rng.normal(size=(5, 6)) * 2).astype(np.float32)
  labels = np.asarray([1, 0, 1, 0, 1], np.float32)
  lengths = [6, 2, 0, 4, 1]
  mask = np.asarray([[1.0] * n + [0.0] * (6 - n) for n in lengths], np.float32)
  loss, metrics = maporl.verifier_loss(jnp.asarray(logits), jnp.asarray(labels),
                                       jnp.asarray(mask))
  ref_loss, ref_acc = bce_ref(logits, labels, mask)
  assert float(loss) == pytest.approx(ref_loss, rel=1e-5)
  assert float(metrics["token_accuracy"]) == pytest.approx(ref_acc, rel=1e-6)
  # Padding logits do not matter.
  garbage = np.where(mask > 0, logits, 50.0).astype(np.float32)
  loss2, _ = maporl.verifier_loss(jnp.asarray(garbage), jnp.asarray(labels), jnp.asarray(mask))
  assert float(loss2) == pytest.approx(ref_loss, rel=1e-5)


def test_verifier_loss_by_hand():
  # Logit 0 is p = .5: log 2 per token whatever the label.
  loss, _ = maporl.verifier_loss(jnp.zeros((2, 3)), jnp.asarray([1.0, 0.0]),
                                 jnp.asarray([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
  assert float(loss) == pytest.approx(math.log(2), rel=1e-6)


# ---------------------------------------------------------------- balance by question


def _skewed():
  counts = {0: (30, 2), 1: (20, 0), 2: (5, 5), 3: (1, 3), 4: (0, 1), 5: (25, 1), 6: (10, 0),
            7: (4, 9)}
  qids, labels = [], []
  for q, (right, wrong) in counts.items():
    qids += [q] * (right + wrong)
    labels += [1] * right + [0] * wrong
  order = np.random.default_rng(0).permutation(len(qids))  # interleave the questions
  return counts, np.asarray(qids)[order], np.asarray(labels)[order]


@pytest.mark.parametrize("per_class", [None, 1, 3, 100])
def test_balance_by_question(per_class):
  counts, qids, labels = _skewed()
  assert labels.mean() > 0.8
  keep = maporl.balance_by_question(qids, labels, np.random.default_rng(1), per_class)
  assert len(np.unique(keep)) == len(keep)
  assert keep.min() >= 0 and keep.max() < len(qids)
  assert (np.diff(keep) > 0).all()  # sorted
  cap = per_class if per_class is not None else len(qids)
  total = 0
  for q, (right, wrong) in counts.items():
    sel = keep[qids[keep] == q]
    n = min(right, wrong, cap)
    assert (labels[sel] == 1).sum() == n and (labels[sel] == 0).sum() == n, q
    total += 2 * n
  assert len(keep) == total
  assert labels[keep].mean() == 0.5
  # Single-class questions are dropped.
  assert not np.isin(qids[keep], [1, 4, 6]).any()


def test_balance_by_question_nothing_to_keep():
  keep = maporl.balance_by_question(np.asarray([0, 0, 1]), np.asarray([1, 1, 0]),
                                    np.random.default_rng(0))
  assert len(keep) == 0


# ---------------------------------------------------------------------------- AUC


def auc_ref(scores, labels):
  pos = [s for s, y in zip(scores, labels) if y]
  neg = [s for s, y in zip(scores, labels) if not y]
  wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
  return wins / (len(pos) * len(neg))


def test_roc_auc_vs_brute_force_with_ties():
  rng = np.random.default_rng(9)
  for _ in range(4):
    scores = rng.integers(0, 5, 40).astype(np.float32) / 4  # many ties
    labels = rng.integers(0, 2, 40)
    assert maporl.roc_auc(scores, labels) == pytest.approx(auc_ref(scores, labels), rel=1e-6)
  scores = rng.uniform(size=40).astype(np.float32)
  labels = rng.integers(0, 2, 40)
  assert maporl.roc_auc(scores, labels) == pytest.approx(auc_ref(scores, labels), rel=1e-6)


def test_roc_auc_extremes():
  labels = np.asarray([0, 0, 1, 1, 1])
  assert maporl.roc_auc(np.asarray([0.1, 0.2, 0.3, 0.8, 0.9]), labels) == 1.0
  assert maporl.roc_auc(np.asarray([0.9, 0.8, 0.3, 0.2, 0.1]), labels) == 0.0
  assert maporl.roc_auc(np.full(5, 0.5), labels) == 0.5
  assert math.isnan(maporl.roc_auc(np.asarray([0.1, 0.2, 0.3, 0.4, 0.5]), np.zeros(5)))
  assert math.isnan(maporl.roc_auc(np.asarray([0.1, 0.2, 0.3, 0.4, 0.5]), np.ones(5)))
