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

from collections.abc import Sequence
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import rlax
from flax import nnx

from algorithms import qmix
from marft.models.heads import ValueHead


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
                    entropy_coef: float = 0.01, count: jax.Array | None = None
                    ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """MARFT's agent policy loss (Sec. 4; PPO, Schulman et al. 2017, Eq. 7), a mean over `mask`:

  L = mean_m[-min(rho A, clip(rho, 1-eps, 1+eps) A)] - c_H mean_m[H],  rho = exp(logp - old),

  over actions (MARFT-A: `logp` an action's summed token log-probs) or tokens (MARFT-T), with
  `entropy` the policy's entropy there. `count` (default `mask.sum()`) is the mean's
  denominator, so that with the whole batch's count the loss over any split of its rows sums
  to the loss over the batch. Metrics: `approx_kl` = mean_m[(rho - 1) - log rho] (the k3
  estimator MARFT's trainer thresholds, `kl_exceeded`), `clip_frac`, `entropy`.
  """
  chex.assert_equal_shape([logp, old_logp, advantages, entropy, mask])
  mask = mask.astype(jnp.float32)
  count = jnp.maximum(mask.sum(), 1.0) if count is None else jnp.maximum(count, 1.0)
  mean = lambda x: (x * mask).sum() / count
  log_ratio = logp - old_logp
  ratio = jnp.exp(log_ratio)
  unclipped = ratio * advantages
  clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
  loss = mean(-jnp.minimum(unclipped, clipped)) - entropy_coef * mean(entropy)
  return loss, {"approx_kl": mean((ratio - 1.0) - log_ratio),
                "clip_frac": mean((clipped < unclipped) * 1.0), "entropy": mean(entropy)}


def kl_exceeded(metrics: dict[str, jax.Array], target_kl: float) -> jax.Array:
  """Whether an update's approximate KL passes `target_kl`: MARFT's trainer then skips the
  policy step (`marft.train_step.make_train_step(skip_update=...)`)."""
  return metrics["approx_kl"] > target_kl


def training_agents(step: int | jax.Array, num_agents: int, interval: int = 0) -> jax.Array:
  """`float32[N]`: 1 for the agents trained at `step`. MARFT's `agent_iteration_interval`:
  with `interval` > 0 one agent at a time, agent (step // interval) % N, round robin; 0 trains
  all at once."""
  if interval <= 0:
    return jnp.ones((num_agents,), jnp.float32)
  return (jnp.arange(num_agents) == (step // interval) % num_agents).astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# Critics over trunk features: `critic.kind` in CRITIC_KINDS.

CRITIC_KINDS = ("shared", "per_agent", "vdn", "qmix")
MIXED_CRITICS = ("vdn", "qmix")


class Critic(NamedTuple):
  """A critic's static parts: its kind, the role count and the value heads' shape.

  - `shared`: one `ValueHead` for every role, read on the acting role's observation (MARFT's
    critic): V(o_(t,i)) at the last prompt token, or per response token for MARFT-T.
  - `per_agent`: one head per role, read the same way.
  - `vdn` / `qmix`: one head per role read twice: after the role's response, the utility
    q_i = Q_i(o_i, a_i), and at the end of its prompt, the baseline b_i = V_i(o_i). The team
    value Q_tot = mix(q, s) (`algorithms.qmix`: a sum, or the monotonic hypernetwork mixer of a
    global-state embedding s of the step's transcript) is trained on the team's lambda-return,
    b_i on q_i; role i's advantage is its own action's linearised share of Q_tot,
    A_i = (dQ_tot / dq_i) (q_i - b_i) (DOP's decomposed advantage, Wang et al. 2021, Eq. 7).
  """

  kind: str
  num_roles: int
  feature_dim: int
  hidden_dims: tuple[int, ...]
  mixer: qmix.Mixer
  head: nnx.GraphDef  # the structure of one ValueHead (its parameters live in the params)

  @property
  def mixed(self) -> bool:
    return self.kind in MIXED_CRITICS

  @property
  def num_heads(self) -> int:
    return 1 if self.kind == "shared" else self.num_roles


def make_critic(kind: str, num_roles: int, feature_dim: int, *,
                hidden_dims: Sequence[int] = (), embed_dim: int = 32,
                hypernet_hidden: int = 64) -> Critic:
  """The critic of `kind` over `feature_dim`-wide trunk features, for `num_roles` roles."""
  if kind not in CRITIC_KINDS:
    raise ValueError(f"critic.kind={kind!r}: choose from {CRITIC_KINDS}")
  if num_roles < 1:
    raise ValueError(f"a critic needs at least one role, got {num_roles}")
  mixer = qmix.make_mixer("qmix" if kind == "qmix" else "vdn", num_roles, feature_dim,
                          embed_dim=embed_dim, hypernet_hidden=hypernet_hidden)
  head = nnx.graphdef(nnx.eval_shape(
      lambda: ValueHead(feature_dim, tuple(hidden_dims), rngs=nnx.Rngs(0))))
  return Critic(kind, num_roles, feature_dim, tuple(hidden_dims), mixer, head)


def _head(critic: Critic, key: jax.Array) -> ValueHead:
  return ValueHead(critic.feature_dim, critic.hidden_dims, rngs=nnx.Rngs(params=key))


def init_critic(critic: Critic, key: jax.Array) -> dict[str, Any]:
  """`{"heads": [H, ...] stacked head parameters, "mixer": mixer parameters}`."""
  head_key, mixer_key = jax.random.split(key)
  states = [nnx.state(_head(critic, k), nnx.Param)
            for k in jax.random.split(head_key, critic.num_heads)]
  return {"heads": jax.tree.map(lambda *xs: jnp.stack(xs), *states),
          "mixer": critic.mixer.init(mixer_key)}


def head_values(critic: Critic, params: dict[str, Any], features: jax.Array,
                roles: jax.Array) -> jax.Array:
  """`float32[...]`: each role's head on `features: [..., D]`; `roles: int[...]` picks the head
  (ignored by a shared critic)."""
  chex.assert_axis_dimension(features, -1, critic.feature_dim)
  chex.assert_equal_shape_prefix([features, roles], roles.ndim)
  every = jax.vmap(lambda state: nnx.merge(critic.head, state)(features))(params["heads"])
  if critic.num_heads == 1:
    return every[0]
  roles = jnp.broadcast_to(roles.reshape(roles.shape + (1,) * (every.ndim - 1 - roles.ndim)),
                           every.shape[1:])
  return jnp.take_along_axis(every, roles[None], axis=0)[0]


def mixed_value(critic: Critic, params: dict[str, Any], utilities: jax.Array,
                state: jax.Array) -> jax.Array:
  """Q_tot `float32[...]` of per-role `utilities: [..., N]` and global `state: [..., D]`."""
  return critic.mixer.apply(params["mixer"], utilities, state)


def mixing_weights(critic: Critic, params: dict[str, Any], utilities: jax.Array,
                   state: jax.Array) -> jax.Array:
  """`dQ_tot / dq_i`, `[..., N]`: >= 0 for QMIX by construction, 1 for VDN."""
  total = lambda q: mixed_value(critic, params, q, state).sum()
  return jax.grad(total)(utilities)


def team_lambda_returns(team_rewards: jax.Array, q_tot: jax.Array, dones: jax.Array, *,
                        gamma: float, lam: float) -> jax.Array:
  """The mixed critic's targets `float32[E, T]`: TD(lambda) returns of the team reward,
  G_t = R_t + gamma (1 - d_t) [(1 - lambda) Q_tot(t+1) + lambda G_(t+1)]
  (`rlax.lambda_returns`, the bootstrap 0 after the last step)."""
  chex.assert_equal_shape([team_rewards, q_tot, dones])
  next_q = jnp.concatenate([q_tot[:, 1:], jnp.zeros_like(q_tot[:, :1])], axis=1)
  discounts = gamma * (1.0 - dones.astype(jnp.float32))
  return jax.vmap(lambda r, d, v: rlax.lambda_returns(r, d, v, lam))(
      team_rewards.astype(jnp.float32), discounts, jax.lax.stop_gradient(next_q))


def critic_outputs(critic: Critic, params: dict[str, Any], features: dict[str, jax.Array]
                   ) -> dict[str, jax.Array]:
  """What the critic says about a batch in the `[E, T, N(, L)]` layout.

  `features`: `obs: [E, T, N, D]` (each role's last prompt token) and, by kind, `tokens:
  [E, T, N, L, D]` (the state before each response token, for MARFT-T), `act: [E, T, N, D]` (the
  last response token) and `state: [E, T, D]` (the step's pooled transcript). Returns `values`
  (`[E, T, N]`, or `[E, T, N, L]` with `tokens`) for shared / per-agent critics; `q`, `b`
  (`[E, T, N]`), `q_tot` (`[E, T]`) and `weights` (`dQ_tot / dq`) for mixed ones.
  """
  obs = features["obs"]
  e, t, n, _ = obs.shape
  roles = jnp.broadcast_to(jnp.arange(n), (e, t, n))
  if not critic.mixed:
    if "tokens" in features:
      return {"values": head_values(critic, params, features["tokens"], roles)}
    return {"values": head_values(critic, params, obs, roles)}
  q = head_values(critic, params, features["act"], roles)
  return {"q": q, "b": head_values(critic, params, obs, roles),
          "q_tot": mixed_value(critic, params, q, features["state"]),
          "weights": mixing_weights(critic, params, q, features["state"])}


def critic_credit(critic: Critic, outputs: dict[str, jax.Array], rewards: jax.Array,
                  dones: jax.Array, mask: jax.Array, lengths: jax.Array | None = None, *,
                  gamma: float, lam: float) -> tuple[jax.Array, jax.Array]:
  """(advantages, value targets) of one batch from the critic's `outputs`.

  Shared / per-agent: `action_level_gae` (or `token_level_gae` given `lengths`) over the
  Flex-POMDP order; targets are the returns. Mixed: the decomposed advantages
  (dQ_tot / dq_i)(q_i - b_i) `[E, T, N]` and the team lambda-returns `[E, T]`. `rewards: [E, T,
  N]` (on the last role of each stage), `dones: [E, T]`, `mask: [E, T, N]` marks real entries.
  """
  e = rewards.shape[0]
  no_bootstrap = jnp.zeros((e,), jnp.float32)  # every episode ends (done or horizon)
  if critic.mixed:
    targets = team_lambda_returns((rewards * mask).sum(-1), outputs["q_tot"], dones,
                                  gamma=gamma, lam=lam)
    advantages = outputs["weights"] * (outputs["q"] - outputs["b"]) * mask
    return advantages, targets
  if lengths is not None:
    return token_level_gae(rewards, outputs["values"], lengths, dones, no_bootstrap,
                           gamma=gamma, lam=lam)
  return action_level_gae(rewards, outputs["values"], dones, no_bootstrap, gamma=gamma, lam=lam)


def critic_loss(critic: Critic, params: dict[str, Any], batch: dict[str, jax.Array], *,
                clip: float, huber_delta: float = 10.0, baseline_coef: float = 1.0
                ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The critic's loss on one batch (`critic_outputs`' features plus `old`, `targets`, `mask`).

  Shared / per-agent: `clipped_value_loss(V, V_old, returns)` over the valid entries (MARFT's
  critic loss, Sec. 4). Mixed: `clipped_value_loss(Q_tot, Q_tot_old, G)` over the steps with
  any entry, plus `baseline_coef` * mean_m Huber(b_i - sg(q_i)), which makes b_i the expected
  utility of role i's observation.
  """
  outputs = critic_outputs(critic, params, batch)
  if not critic.mixed:
    loss = clipped_value_loss(outputs["values"], batch["old"], batch["targets"], batch["mask"],
                              clip=clip, huber_delta=huber_delta)
    return loss, {"value_loss": loss}
  step_mask = (batch["mask"].sum(-1) > 0).astype(jnp.float32)
  value = clipped_value_loss(outputs["q_tot"], batch["old"], batch["targets"], step_mask,
                             clip=clip, huber_delta=huber_delta)
  gap = rlax.huber_loss(outputs["b"] - jax.lax.stop_gradient(outputs["q"]), huber_delta)
  mask = batch["mask"].astype(jnp.float32)
  baseline = (gap * mask).sum() / jnp.maximum(mask.sum(), 1.0)
  return value + baseline_coef * baseline, {"value_loss": value, "baseline_loss": baseline}
