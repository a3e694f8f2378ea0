"""AgentPRM and InversePRM (Choudhury 2025, "Process Reward Models for LLM Agents: Practical
Framework and Directions"), as pure functions.

AgentPRM (Sec. 2) alternates two stages: a PRM Q(s, a) is fit to Monte-Carlo step targets of
the current policy's rollouts (soft binary cross-entropy), then the policy is improved against
it, by online DPO on pairs the PRM ranks or by per-step Best-of-N at inference. InversePRM
(Sec. 3) learns the PRM from expert demonstrations alone: the implied reward
r(s, a) = Q(s, a) - gamma Q(s', a') separates expert from policy transitions.

Shapes: `[B, T]` is (sequence, token), one PRM logit per step read at the step's last token;
`[P]` one entry per preference pair; `[S, N]` (state, candidate action).
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence

import chex
import jax
import jax.numpy as jnp
import optax


def mc_step_targets(episodes: Sequence[tuple[Sequence[Hashable], bool | float]], *,
                    gamma: float = 0.95) -> dict[Hashable, float]:
  """AgentPRM's PRM targets (Sec. 2): a Monte-Carlo estimate of Q(s, a) per step, in [0, 1].

  `episodes` holds `(step_keys, success)` per rollout, the hashable (state, action) keys in
  order and the outcome s in [0, 1] (a bool or a graded score). With the outcome reward
  r = 2 s - 1 and k the number of steps after a step in its episode (0 for the last),

  Q(s, a) = mean over every visit of (s, a) of gamma^k r,   target = (Q + 1) / 2;

  a key visited twice in one episode counts twice; an empty episode adds nothing. The
  reference code (sanjibanc/agent_prm) discounts by the steps from the episode's start; this
  discounts by the steps remaining, as the paper's Monte-Carlo return does.
  """
  totals: dict[Hashable, float] = {}
  counts: dict[Hashable, int] = {}
  for keys, success in episodes:
    reward = 2.0 * float(success) - 1.0
    n = len(keys)
    for i, key in enumerate(keys):
      totals[key] = totals.get(key, 0.0) + gamma**(n - 1 - i) * reward
      counts[key] = counts.get(key, 0) + 1
  return {key: (totals[key] / counts[key] + 1.0) / 2.0 for key in totals}


def prm_value(z: jax.Array) -> jax.Array:
  """A BCE-trained PRM's value on the outcome scale (Sec. 2): the logit z predicts
  (Q + 1) / 2, so Q = 2 sigmoid(z) - 1, in [-1, 1]."""
  return 2.0 * jax.nn.sigmoid(z) - 1.0


def prm_loss(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
  """The PRM's objective (AgentPRM, Sec. 2): binary cross-entropy on soft targets,

  L = -sum_{b,t} m_{b,t} [y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))] / max(sum m, 1),

  `logits z, targets y, mask m: float32[B, T]`, m 1 at each step's last token (where the PRM
  reads Q(s, a)) and y the step's `mc_step_targets` value there. Computed from logits
  (`optax.sigmoid_binary_cross_entropy`), finite for any z; targets off the mask are ignored.
  """
  chex.assert_rank(logits, 2)
  chex.assert_equal_shape([logits, targets, mask])
  mask = mask.astype(jnp.float32)
  targets = jnp.where(mask > 0, targets.astype(jnp.float32), 0.0)
  bce = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), targets)
  return (bce * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def dpo_loss(policy_chosen_logp: jax.Array, policy_rejected_logp: jax.Array,
             ref_chosen_logp: jax.Array, ref_rejected_logp: jax.Array, *, beta: float = 0.03
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """DPO (Rafailov et al. 2023, Eq. 7), AgentPRM's online policy update (Sec. 2, beta 0.03):

  L = -mean_p log sigmoid(beta [(log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))])

  over pairs p, each input `float32[P]` the summed log-probability of a response; the chosen
  y_w and rejected y_l are the PRM's ranking of two samples of one state (`prm_pairs`).
  Metrics: `reward_accuracy`, the fraction of pairs whose implicit reward
  beta (log pi - log pi_ref) is higher for the chosen response, and `reward_margin`, the mean
  of the bracket times beta.
  """
  chex.assert_rank(policy_chosen_logp, 1)
  chex.assert_equal_shape([policy_chosen_logp, policy_rejected_logp, ref_chosen_logp,
                           ref_rejected_logp])
  chosen = beta * (policy_chosen_logp - ref_chosen_logp).astype(jnp.float32)
  rejected = beta * (policy_rejected_logp - ref_rejected_logp).astype(jnp.float32)
  margin = chosen - rejected
  loss = -jax.nn.log_sigmoid(margin).mean()
  return loss, {"reward_accuracy": (margin > 0).astype(jnp.float32).mean(),
                "reward_margin": margin.mean()}


def prm_pairs(scores: jax.Array) -> tuple[jax.Array, jax.Array]:
  """AgentPRM's online-DPO pairs (Sec. 2): of the two actions sampled in each state, the one
  the PRM scores higher is chosen, the other rejected. `scores: float32[S, 2]`; returns the
  chosen index `int32[S]` (0 or 1) and `valid: bool[S]`, False where the scores tie (no
  preference)."""
  chex.assert_rank(scores, 2)
  chex.assert_axis_dimension(scores, 1, 2)
  chosen = (scores[:, 1] > scores[:, 0]).astype(jnp.int32)
  return chosen, scores[:, 0] != scores[:, 1]


def shaped_targets(q: jax.Array, v_ref_s: jax.Array, v_ref_next: jax.Array, *,
                   gamma: float = 0.95) -> jax.Array:
  """AgentPRM's reward-shaped PRM target (Sec. 4, process reward shaping): potential-based
  shaping (Ng et al. 1999) with a reference policy's value V_ref as the potential,

  Q_shaped(s, a) = Q(s, a) + gamma V_ref(s') - V_ref(s),

  elementwise on arrays of one shape, all on Q's [-1, 1] scale; at a terminal step pass
  V_ref(s') = 0 (the absorbing state's potential). The reference code drops both shaping terms
  at the last step instead.
  """
  chex.assert_equal_shape([q, v_ref_s, v_ref_next])
  return q + gamma * v_ref_next - v_ref_s


def inverse_prm_reward(q: jax.Array, q_next: jax.Array, terminal: jax.Array, *,
                       gamma: float = 0.95) -> jax.Array:
  """InversePRM's implied reward (Sec. 3, the inverse Bellman operator of IQ-Learn):

  r(s, a) = Q(s, a) - gamma (1 - done) Q(s', a'),

  with Q(s', a') the PRM's value of the next step of the same trajectory and `terminal`
  (done) 1 at a trajectory's last step; the gradient flows through both Q terms.
  """
  chex.assert_equal_shape([q, q_next, terminal])
  return q - gamma * q_next * (1.0 - jnp.asarray(terminal, jnp.float32))


def inverse_prm_loss(reward_logits_expert: jax.Array, reward_logits_policy: jax.Array
                     ) -> jax.Array:
  """InversePRM's objective (Sec. 3): the implied rewards r = `inverse_prm_reward` as logits of
  a classifier of expert (label 1) against policy (label 0) transitions, class-balanced,

  L = 1/2 mean_{e in E} -log sigmoid(r_e) + 1/2 mean_{p in P} -log(1 - sigmoid(r_p)),

  `float32[E]` and `float32[P]`; each class weighs half whatever its size.
  """
  chex.assert_rank([reward_logits_expert, reward_logits_policy], 1)
  expert = jax.nn.softplus(-reward_logits_expert.astype(jnp.float32)).mean()
  policy = jax.nn.softplus(reward_logits_policy.astype(jnp.float32)).mean()
  return 0.5 * (expert + policy)


def best_of_n(scores: jax.Array) -> jax.Array:
  """AgentPRM's inference-time policy (Sec. 2): per step, sample N actions (N = 16) and take
  the one the PRM scores highest, argmax_a Q(s, a). `scores: float32[N]` or `float32[S, N]`;
  the index (`int32[]` or `int32[S]`) of the best candidate, ties to the lowest index."""
  chex.assert_rank(scores, {1, 2})
  return jnp.argmax(scores, axis=-1).astype(jnp.int32)
