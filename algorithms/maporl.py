"""MAPoRL (Park et al. 2025, "MAPoRL: Multi-Agent Post-Co-Training for Collaborative LLMs with
Reinforcement Learning"): a verifier scores every answer of a multi-agent discussion; each
agent's reward for its answer at turn t weighs that score with the team's later scores (the
influence-aware reward, Sec. 4.2) plus incentives for corrective and persuasive revisions
(Sec. 4.3); each agent's policy is trained by PPO on its own responses (Sec. 4.4).

Shapes: `[E, T, A]` is (episode = one discussion, turn, agent); `[R, L]` is (one row per
response, response token).
"""
from __future__ import annotations

from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import rlax

PENALTY = -10.0  # the reward of an answer that does not parse (the reference's penalty value)
CORRECT = 0.5  # correctness above this counts as right, below as wrong (the reference's cut)


def influence_reward(scores: jax.Array, *, gamma: float = 0.3) -> jax.Array:
  """The influence-aware verification reward (MAPoRL, Sec. 4.2), `float32[E, T, A]`:

  R(t, i) = [V(t, i) + sum_{t'=t+1..T} gamma^(t'-t) mean_j V(t', j)] / sum_{t'=t..T} gamma^(t'-t)

  from verifier scores `V = scores: float32[E, T, A]`, the mean over all A agents. An answer is
  credited with its own score and, discounted, with the team's later scores: the answers it
  influenced. gamma = 0 is the answer's own score; at the last turn R = V.
  """
  chex.assert_rank(scores, 3)
  scores = scores.astype(jnp.float32)
  team = scores.mean(axis=2)  # [E, T]
  t = scores.shape[1]
  # discount[t, t'] = gamma^(t'-t) for t' > t, else 0 (gamma=0 gives no future term: 0**k, k>0).
  offsets = jnp.arange(t)[None, :] - jnp.arange(t)[:, None]
  future = jnp.where(offsets > 0, jnp.float32(gamma) ** jnp.maximum(offsets, 1), 0.0)
  normaliser = 1.0 + future.sum(axis=1)  # sum_{t'=t..T} gamma^(t'-t)
  later = jnp.einsum("ts,es->et", future, team)
  return (scores + later[:, :, None]) / normaliser[None, :, None]


def collaboration_incentives(correct: jax.Array, alphas: Sequence[float]) -> jax.Array:
  """The collaboration incentives (MAPoRL, Sec. 4.3), `float32[E, T, A]`, from `correct:
  float32[E, T, A]` (1 right, 0 wrong; above / below 0.5) and `alphas = (a0, a1, a2, a3)`.

  With c = agent i's correctness and o = the mean correctness of the other agents:
  - revision at t >= 2 (from c(t-1) to c(t)): wrong -> right is rewarded, right -> wrong is
    penalised; a0 when the agent moved toward what the others had (wrong -> right when the
    others were right, persuaded; right -> wrong when they were wrong, misled), a1 when it moved
    against them (an independent correction, or abandoning a right answer the others shared);
  - influence at t < T (from o(t) to o(t+1)): the others turning right is rewarded and turning
    wrong penalised, by a3 when agent i's answer at t is where they went (i right and they turn
    right: persuasive; i wrong and they turn wrong: misleading), by a2 otherwise.
  With one agent only a1 applies (no others). The reference code's influence terms carry the
  opposite signs; these follow the paper's intent (reward corrective and persuasive turns).
  """
  chex.assert_rank(correct, 3)
  if len(alphas) != 4:
    raise ValueError(f"alphas={tuple(alphas)}: MAPoRL's incentives take four (a0, a1, a2, a3)")
  a0, a1, a2, a3 = (jnp.float32(a) for a in alphas)
  c = correct.astype(jnp.float32)
  _, t, n = c.shape
  right, wrong = c > CORRECT, c < CORRECT
  out = jnp.zeros_like(c)
  if t < 2:
    return out
  if n > 1:
    others = (c.sum(axis=2, keepdims=True) - c) / (n - 1)
  else:
    others = jnp.full_like(c, jnp.nan)  # no others: neither right nor wrong
  o_right, o_wrong = others > CORRECT, others < CORRECT
  before_right, before_wrong = o_right[:, :-1], o_wrong[:, :-1]  # the others at t-1
  fixed = wrong[:, :-1] & right[:, 1:]  # agent i's revision into turn t (index 1..T-1)
  broke = right[:, :-1] & wrong[:, 1:]
  if n > 1:
    revision = (fixed * jnp.where(before_right, a0, jnp.where(before_wrong, a1, 0.0))
                - broke * jnp.where(before_wrong, a0, jnp.where(before_right, a1, 0.0)))
  else:
    revision = (fixed.astype(jnp.float32) - broke) * a1
  out = out.at[:, 1:].add(revision)
  if n > 1:
    turned_right = before_wrong & o_right[:, 1:]  # the others' change from t to t+1
    turned_wrong = before_right & o_wrong[:, 1:]
    mine_right, mine_wrong = right[:, :-1], wrong[:, :-1]  # agent i's answer at t
    influence = (turned_right * jnp.where(mine_right, a3, jnp.where(mine_wrong, a2, 0.0))
                 - turned_wrong * jnp.where(mine_wrong, a3, jnp.where(mine_right, a2, 0.0)))
    out = out.at[:, :-1].add(influence)
  return out


def discussion_rewards(scores: jax.Array, correct: jax.Array, invalid: jax.Array, *,
                       gamma: float = 0.3, alphas: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
                       penalty: float = PENALTY) -> jax.Array:
  """Each answer's reward (MAPoRL, Sec. 4.2-4.3), `float32[E, T, A]`: `influence_reward` of the
  verifier `scores` plus `collaboration_incentives` of the exact checker's `correct`; an answer
  that does not parse (`invalid` 1) gets `penalty` instead (-10, the reference's value). Its
  verifier score still counts in the others' influence terms, as the score of a wrong answer
  (the reference puts the -10 itself there, which charges the partners for the format error).
  """
  chex.assert_equal_shape([scores, correct, invalid])
  reward = influence_reward(scores, gamma=gamma) + collaboration_incentives(correct, alphas)
  return jnp.where(invalid > 0, jnp.float32(penalty), reward)


def token_rewards(scores: jax.Array, kl: jax.Array, mask: jax.Array, *, kl_coef: float = 0.002
                  ) -> jax.Array:
  """The per-token reward of each response (MAPoRL, Sec. 4.4; TRL's PPOv2), `float32[R, L]`:

  r_l = -kl_coef * KL_l  on every response token,  + score on the last one,

  with `KL_l = log pi(y_l) - log pi_ref(y_l)` (`kl: float32[R, L]`), `scores: float32[R]` the
  answer's reward and `mask: float32[R, L]` the response tokens (a prefix of each row).
  """
  chex.assert_rank([scores, kl, mask], [1, 2, 2])
  chex.assert_equal_shape([kl, mask])
  mask = mask.astype(jnp.float32)
  lengths = mask.sum(axis=1).astype(jnp.int32)
  last = jax.nn.one_hot(jnp.maximum(lengths - 1, 0), mask.shape[1]) * (lengths > 0)[:, None]
  return (-kl_coef * kl.astype(jnp.float32) + scores[:, None] * last) * mask


def response_gae(rewards: jax.Array, values: jax.Array, mask: jax.Array, *, gamma: float = 1.0,
                 lam: float = 0.95) -> tuple[jax.Array, jax.Array]:
  """GAE over the tokens of each response (MAPoRL, Sec. 4.4: gamma 1, lambda 0.95), `[R, L]`
  advantages and returns: delta_l = r_l + gamma V_{l+1} - V_l, A_l = delta_l + gamma lambda
  A_{l+1}, the value after a response's last token 0 (each answer is scored on its own).
  `rlax.truncated_generalized_advantage_estimation` per row; padding is 0 in both outputs."""
  chex.assert_equal_shape([rewards, values, mask])
  mask = mask.astype(jnp.float32)
  values = values.astype(jnp.float32) * mask
  values_t = jnp.concatenate([values, jnp.zeros_like(values[:, :1])], axis=1)
  discounts = jnp.full(rewards.shape, gamma, jnp.float32)
  advantages = jax.vmap(rlax.truncated_generalized_advantage_estimation,
                        in_axes=(0, 0, None, 0))(
      rewards.astype(jnp.float32) * mask, discounts, lam, values_t) * mask
  return advantages, (advantages + values) * mask


def whiten_per_group(x: jax.Array, mask: jax.Array, groups: jax.Array, num_groups: int, *,
                     eps: float = 1e-8) -> jax.Array:
  """`(x - mean_g) / sqrt(var_g + eps)` over the masked entries of each row's group (MAPoRL
  whitens advantages per (turn, agent): `groups: int32[R]`), `x, mask: [R, L]`; var is the
  unbiased variance (TRL's `masked_whiten`), a group of one entry has variance 0; padding
  stays 0 and does not enter any group's statistics."""
  chex.assert_equal_shape([x, mask])
  chex.assert_shape(groups, (x.shape[0],))
  mask = mask.astype(jnp.float32)
  x = x.astype(jnp.float32)
  count = jax.ops.segment_sum(mask.sum(1), groups, num_groups)
  mean = jax.ops.segment_sum((x * mask).sum(1), groups, num_groups) / jnp.maximum(count, 1.0)
  centred = (x - mean[groups][:, None]) * mask
  sq = jax.ops.segment_sum((centred**2).sum(1), groups, num_groups)
  var = sq / jnp.maximum(count - 1.0, 1.0)
  return centred * jax.lax.rsqrt(var[groups] + eps)[:, None]


def roc_auc(scores: jax.Array, labels: jax.Array) -> float:
  """The area under the ROC curve of `scores` separating `labels` 1 from 0 (the probability a
  random positive outscores a random negative, ties counted half); nan without both classes."""
  scores, labels = jnp.asarray(scores, jnp.float32), jnp.asarray(labels) > 0
  pos, neg = labels.sum(), (~labels).sum()
  greater = (scores[:, None] > scores[None, :]).astype(jnp.float32)
  ties = (scores[:, None] == scores[None, :]).astype(jnp.float32)
  pairs = (labels[:, None] & ~labels[None, :]).astype(jnp.float32)
  wins = ((greater + 0.5 * ties) * pairs).sum()
  return float(jnp.where((pos > 0) & (neg > 0), wins / jnp.maximum(pos * neg, 1), jnp.nan))


def verifier_loss(logits: jax.Array, labels: jax.Array, mask: jax.Array,
                  count: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The verifier's objective (MAPoRL, Sec. 4.1): a sigmoid on every response token, binary
  cross-entropy against the answer's correctness,

  L = mean_{r, l in response} BCE(sigmoid(z_{r,l}), y_r),

  `logits: float32[R, L]` per position, `labels: float32[R]` (1 correct), `mask: float32[R, L]`
  the response tokens (0 drops a padding row); `count` (default `mask.sum()`) the mean's
  denominator. The verifier's score of an answer is its last token's sigmoid."""
  chex.assert_equal_shape([logits, mask])
  chex.assert_shape(labels, (logits.shape[0],))
  mask = mask.astype(jnp.float32)
  targets = jnp.broadcast_to(labels.astype(jnp.float32)[:, None], logits.shape)
  bce = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), targets)
  count = mask.sum() if count is None else count
  correct = ((logits > 0) == (targets > 0.5)).astype(jnp.float32)
  safe = jnp.maximum(count, 1.0)
  return (bce * mask).sum() / safe, {"token_accuracy": (correct * mask).sum() / safe}


def balance_by_question(question_ids: np.ndarray, labels: np.ndarray,
                        rng: np.random.Generator, per_class: int | None = None) -> np.ndarray:
  """Indices of a class-balanced subset (MAPoRL's verifier data): per question, as many correct
  as wrong answers (the smaller count, at most `per_class`), drawn at random, so the question
  alone says nothing about the label and the verifier cannot score difficulty; a question with
  one class only is left out. Sorted indices into the inputs."""
  question_ids, labels = np.asarray(question_ids), np.asarray(labels) > 0
  chex.assert_equal_shape([question_ids, labels])
  keep = []
  for q in np.unique(question_ids):
    right = np.flatnonzero((question_ids == q) & labels)
    wrong = np.flatnonzero((question_ids == q) & ~labels)
    n = min(len(right), len(wrong), per_class if per_class is not None else len(labels))
    if n:
      keep += [rng.choice(right, n, replace=False), rng.choice(wrong, n, replace=False)]
  return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)
