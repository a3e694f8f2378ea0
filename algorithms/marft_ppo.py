"""MARFT's agent-level credit assignment (Liao et al. 2025, "MARFT: Multi-Agent Reinforcement
Fine-Tuning", Sec. 4, MARFT-A and MARFT-T): GAE across the agents of a Flex-POMDP step.

Agents act in a fixed order inside a step, so an episode of T steps and N agents is one sequence
(t, 0), (t, 1), ..., (t, N-1), (t+1, 0), ...: agent i bootstraps from agent i+1's value in the
same step and the last agent from the first agent's value at the next step. Every transition
discounts by gamma and accumulates by gamma * lambda; a step that ends its episode (`dones`)
cuts both at its boundary. Token-level credit runs the same recursion over the tokens inside
each action (reward on its last token, token j bootstrapping from token j + 1). Both are
`rlax.truncated_generalized_advantage_estimation` over that flattened sequence, vmapped over
episodes.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import rlax


def _flat_gae(rewards: jax.Array, values: jax.Array, discounts: jax.Array,
              bootstrap: jax.Array, lam: float) -> jax.Array:
  """GAE of one flattened sequence `[L]` whose value after the last element is `bootstrap`."""
  values_t = jnp.concatenate([values, bootstrap[None]])
  return rlax.truncated_generalized_advantage_estimation(rewards, discounts, lam, values_t)


def _boundary_discounts(dones: jax.Array, shape: tuple[int, ...], gamma: float) -> jax.Array:
  """gamma at every transition of `[E, T, ...]`, 0 after the last element of a done step."""
  discounts = jnp.full(shape, gamma, jnp.float32).reshape(shape[0], shape[1], -1)
  discounts = discounts.at[:, :, -1].set(gamma * (1.0 - dones.astype(jnp.float32)))
  return discounts.reshape(shape)


def action_level_gae(rewards: jax.Array, values: jax.Array, dones: jax.Array,
                     last_values: jax.Array, *, gamma: float, lam: float
                     ) -> tuple[jax.Array, jax.Array]:
  """MARFT-A advantages and returns (MARFT, Sec. 4.2): `float32[E, T, N]` each.

  delta_(t,i) = r_(t,i) + g_(t,i) V_next - V_(t,i), A = delta + g lambda A_next over the order
  (t, 0) .. (t, N-1), (t+1, 0); V_next is agent i+1's value, or the first agent's at t+1 after
  the last agent (`last_values: float32[E]` after the final step); g = gamma, 0 after the last
  agent of a step with `dones: float32[E, T]` = 1. returns = A + V.
  """
  chex.assert_rank([rewards, values, dones, last_values], [3, 3, 2, 1])
  chex.assert_equal_shape([rewards, values])
  e, t, n = rewards.shape
  chex.assert_shape(dones, (e, t))
  chex.assert_shape(last_values, (e,))
  discounts = _boundary_discounts(dones, (e, t, n), gamma)
  advantages = jax.vmap(_flat_gae, in_axes=(0, 0, 0, 0, None))(
      rewards.reshape(e, -1).astype(jnp.float32), values.reshape(e, -1).astype(jnp.float32),
      discounts.reshape(e, -1), last_values.astype(jnp.float32), lam).reshape(e, t, n)
  return advantages, advantages + values


def token_level_gae(rewards: jax.Array, values: jax.Array, lengths: jax.Array, dones: jax.Array,
                    last_values: jax.Array, *, gamma: float, lam: float
                    ) -> tuple[jax.Array, jax.Array]:
  """MARFT-T advantages and returns per response token (MARFT, Sec. 4.3): `float32[E, T, N, L]`.

  `values: float32[E, T, N, L]` per token, `rewards: float32[E, T, N]` on each action's last
  token, `lengths: int32[E, T, N]` (>= 1) tokens per action. The recursion of
  `action_level_gae` runs over every action's tokens in order: token j bootstraps from token
  j + 1, an action's last token from the next action's first token (the first agent's at t + 1
  after the last agent; `last_values` after the final step); a done step cuts after its last
  agent's last token. Zeros past each length.
  """
  chex.assert_rank([rewards, values, lengths, dones, last_values], [3, 4, 3, 2, 1])
  e, t, n, width = values.shape
  chex.assert_shape([rewards, lengths], (e, t, n))
  chex.assert_shape(dones, (e, t))
  position = jnp.arange(width)
  valid = position < lengths[..., None]  # [E, T, N, L]
  last_token = position == lengths[..., None] - 1
  token_rewards = jnp.where(last_token, rewards[..., None], 0.0).astype(jnp.float32)
  # The transition after a step's last agent's last token carries the done cut.
  cut = last_token & (jnp.arange(n) == n - 1)[None, None, :, None]
  discounts = jnp.where(cut, gamma * (1.0 - dones.astype(jnp.float32))[:, :, None, None], gamma)

  def one_episode(valid, token_rewards, values, discounts, bootstrap):
    # Valid tokens to the front (stable), so the recursion skips padding; the tail after them
    # has zero discount, and its first slot holds the bootstrap as both value and reward, so
    # its own delta (r - V) is 0 and nothing flows back from the tail.
    valid, token_rewards, values, discounts = (x.reshape(-1) for x in
                                               (valid, token_rewards, values, discounts))
    order = jnp.argsort(~valid, stable=True)
    count = valid.sum()
    kept = jnp.arange(valid.size) < count
    compact = lambda x: jnp.where(kept, x[order], 0.0)
    values_t = jnp.concatenate([compact(values), jnp.zeros(1)]).at[count].set(bootstrap)
    rewards_t = compact(token_rewards).at[count].set(bootstrap)  # dropped when no tail
    advantages = rlax.truncated_generalized_advantage_estimation(
        rewards_t, compact(discounts), lam, values_t)
    return jnp.zeros(valid.size).at[order].set(jnp.where(kept, advantages, 0.0))

  advantages = jax.vmap(one_episode)(valid, token_rewards, values.astype(jnp.float32),
                                     discounts, last_values.astype(jnp.float32))
  advantages = advantages.reshape(e, t, n, width)
  returns = jnp.where(valid, advantages + values, 0.0)
  return advantages, returns


def normalize_advantages(advantages: jax.Array, mask: jax.Array, eps: float = 1e-8
                         ) -> jax.Array:
  """(A - mean) / (std + eps) over the entries where `mask` is 1 only (padding and entries of
  untrained agents do not move the statistics); 0 elsewhere (MARFT's PPO, Sec. 4)."""
  chex.assert_equal_shape([advantages, mask])
  mask = mask.astype(jnp.float32)
  count = jnp.maximum(mask.sum(), 1.0)
  mean = (advantages * mask).sum() / count
  std = jnp.sqrt((((advantages - mean) * mask) ** 2).sum() / count)
  return jnp.where(mask > 0, (advantages - mean) / (std + eps), 0.0)


def clipped_value_loss(values: jax.Array, old_values: jax.Array, returns: jax.Array,
                       mask: jax.Array, *, clip: float, huber_delta: float = 10.0) -> jax.Array:
  """PPO's clipped value loss with a Huber penalty (MARFT's critic, Sec. 4; MAPPO's form):

  L_V = mean_m max(H(V - R), H(V_old + clip(V - V_old, -c, c) - R)),

  H the Huber loss with `huber_delta` (`rlax.huber_loss`), the mean over `mask`."""
  chex.assert_equal_shape([values, old_values, returns, mask])
  clipped = old_values + jnp.clip(values - old_values, -clip, clip)
  loss = jnp.maximum(rlax.huber_loss(values - returns, huber_delta),
                     rlax.huber_loss(clipped - returns, huber_delta))
  mask = mask.astype(jnp.float32)
  return (loss * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def ppo_policy_loss(logp: jax.Array, old_logp: jax.Array, advantages: jax.Array,
                    entropy: jax.Array, mask: jax.Array, *, clip_eps: float = 0.2,
                    entropy_coef: float = 0.01, target_kl: float | None = None
                    ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """MARFT's agent policy loss (Sec. 4; PPO, Schulman et al. 2017, Eq. 7), token-mean over
  `mask`:

  L = mean_m[-min(rho A, clip(rho, 1-eps, 1+eps) A)] - c_H mean_m[H],  rho = exp(logp - old),

  `advantages` per token (an action's advantage broadcast to its tokens for MARFT-A), `entropy`
  the policy's per-token entropy. With `target_kl`, the whole term is zeroed (no policy step)
  when the approximate KL mean_m[old - logp] exceeds it, as MARFT's trainer skips the actor
  update. Metrics: approx_kl, clip_frac, entropy, policy_skipped.
  """
  chex.assert_equal_shape([logp, old_logp, advantages, entropy, mask])
  mask = mask.astype(jnp.float32)
  count = jnp.maximum(mask.sum(), 1.0)
  mean = lambda x: (x * mask).sum() / count
  ratio = jnp.exp(logp - old_logp)
  unclipped = ratio * advantages
  clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
  approx_kl = mean(old_logp - logp)
  loss = mean(-jnp.minimum(unclipped, clipped)) - entropy_coef * mean(entropy)
  skipped = (jax.lax.stop_gradient(approx_kl) > target_kl) if target_kl is not None else False
  loss = jnp.where(skipped, 0.0, loss)
  return loss, {"approx_kl": approx_kl, "clip_frac": mean((clipped < unclipped) * 1.0),
                "entropy": mean(entropy), "policy_skipped": jnp.asarray(skipped, jnp.float32)}


def training_agents(step: int | jax.Array, num_agents: int, interval: int = 0) -> jax.Array:
  """`float32[N]`: 1 for the agents trained at `step`. MARFT's `agent_iteration_interval`:
  with `interval` > 0 one agent at a time, agent (step // interval) % N, round robin; 0 trains
  all at once."""
  if interval <= 0:
    return jnp.ones((num_agents,), jnp.float32)
  return (jnp.arange(num_agents) == (step // interval) % num_agents).astype(jnp.float32)
