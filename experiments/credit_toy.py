"""Which role gets the credit: MARFT's critics on a cooperative two-role toy.

Two roles act in one stage (neither sees the other's action, as in a parallel workflow), each
choosing one of `actions` answers to a context c of `contexts`; the team reward is 1 when the
`decider` role's answer is c's target, whatever the other role says. The policies are uniform
and fixed, so only the critic learns: its features are one-hot (a role's observation: c and
the role; after its answer: (c, answer) and the role; the global state: c), the same critic
code as the LLM job (`algorithms.marft_ppo`) on them. After training, `credit_share` is
E|A_decider| / (E|A_decider| + E|A_other|): 1 puts all the credit on the role that decided,
0.5 splits it evenly. The true advantage of the other role's answer is 0.

  python -m experiments.credit_toy          # the table of critic kinds x decider over seeds
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from algorithms import marft_ppo


def sample(key: jax.Array, episodes: int, contexts: int, actions: int, decider: int
           ) -> tuple[dict[str, jax.Array], jax.Array, jax.Array]:
  """One batch: features in the `[E, T=1, N=2]` layout, rewards (on the last role) and the
  decider's true advantage `1[a = target] - 1/actions`."""
  ctx_key, act_key = jax.random.split(key)
  c = jax.random.randint(ctx_key, (episodes,), 0, contexts)
  a = jax.random.randint(act_key, (episodes, 2), 0, actions)
  role = jax.nn.one_hot(jnp.arange(2), 2)[None].repeat(episodes, 0)  # [E, 2, 2]
  obs = jnp.concatenate([jnp.zeros((episodes, 2, contexts * actions)),
                         jax.nn.one_hot(c, contexts)[:, None].repeat(2, 1), role], -1)
  act = jnp.concatenate([jax.nn.one_hot(c[:, None] * actions + a, contexts * actions),
                         jnp.zeros((episodes, 2, contexts)), role], -1)
  state = jnp.concatenate([jnp.zeros((episodes, contexts * actions)),
                           jax.nn.one_hot(c, contexts), jnp.zeros((episodes, 2))], -1)
  chosen = a[:, decider] == c % actions
  reward = chosen.astype(jnp.float32)
  rewards = jnp.zeros((episodes, 1, 2)).at[:, 0, 1].set(reward)
  features = {"obs": obs[:, None], "act": act[:, None], "state": state[:, None]}
  return features, rewards, chosen.astype(jnp.float32) - 1.0 / actions


@functools.partial(jax.jit, static_argnames=("kind", "steps", "episodes", "contexts",
                                             "actions"))
def credit_share(key: jax.Array, *, kind: str, decider: int | jax.Array, steps: int = 300,
                 episodes: int = 64, contexts: int = 4, actions: int = 3, gamma: float = 0.99,
                 lam: float = 0.95, lr: float = 3e-2) -> dict[str, jax.Array]:
  """Trains a `kind` critic on `steps` fresh batches, then measures on one more: the decider's
  `credit_share` and the correlation of its advantage with the true one (`credit_corr`)."""
  dim = contexts * actions + contexts + 2
  critic = marft_ppo.make_critic(kind, 2, dim, hidden_dims=(32,), embed_dim=8,
                                 hypernet_hidden=16)
  init_key, key = jax.random.split(key)
  params = marft_ppo.init_critic(critic, init_key)
  optimizer = optax.adam(lr)
  def credit(params, features, rewards):
    dones, mask = jnp.ones(rewards.shape[:2]), jnp.ones(rewards.shape)
    outputs = marft_ppo.critic_outputs(critic, params, features)
    advantages, targets = marft_ppo.critic_credit(critic, outputs, rewards, dones, mask,
                                                  gamma=gamma, lam=lam)
    old = outputs["q_tot"] if critic.mixed else outputs["values"]
    return advantages, targets, old

  def update(carry, key):
    params, opt_state = carry
    features, rewards, _ = sample(key, episodes, contexts, actions, decider)
    _, targets, old = credit(params, features, rewards)
    batch = {**features, "old": old, "targets": targets, "mask": jnp.ones(rewards.shape)}
    grads = jax.grad(lambda p: marft_ppo.critic_loss(critic, p, batch, clip=10.0)[0])(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None

  train_key, test_key = jax.random.split(key)
  (params, _), _ = jax.lax.scan(update, (params, optimizer.init(params)),
                                jax.random.split(train_key, steps))
  features, rewards, true_advantage = sample(test_key, episodes * 8, contexts, actions, decider)
  advantages, _, _ = credit(params, features, rewards)
  mine, other = advantages[:, 0, decider], advantages[:, 0, 1 - decider]
  share = jnp.abs(mine).mean() / (jnp.abs(mine).mean() + jnp.abs(other).mean() + 1e-9)
  return {"credit_share": share, "credit_corr": jnp.corrcoef(mine, true_advantage)[0, 1]}


def main(seeds: int = 5) -> None:
  """Prints credit share and correlation (mean +- std over seeds) per critic kind and decider."""
  print("| critic | decider | credit share | corr(A_decider, true A) |")
  print("|---|---|---|---|")
  for kind in marft_ppo.CRITIC_KINDS:
    for decider in (0, 1):
      got = [credit_share(jax.random.key(s), kind=kind, decider=decider) for s in range(seeds)]
      share = np.asarray([float(g["credit_share"]) for g in got])
      corr = np.asarray([float(g["credit_corr"]) for g in got])
      print(f"| {kind} | {'first' if decider == 0 else 'second'} | {share.mean():.3f} +- "
            f"{share.std():.3f} | {corr.mean():.3f} +- {corr.std():.3f} |")


if __name__ == "__main__":
  main()
