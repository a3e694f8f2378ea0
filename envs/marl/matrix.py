"""One-shot cooperative matrix games given by their payoff table.

N agents (the table's rank) act once; the team receives `payoff[a_1, ..., a_N]` and the episode
ends. Nothing is observed (each agent's observation and the global state are a constant 1), so
a learner must find the joint action from rewards alone. Named tables:

- `climbing` (Claus & Boutilier 1998): [[11, -30, 0], [-30, 7, 6], [0, 0, 5]]; optimum 11 at
  (0, 0), guarded by -30 penalties, so independent learners drift to (1, 1) or (2, 2).
- `penalty` (Claus & Boutilier 1998, k = -100): [[-100, 0, 10], [0, 2, 0], [10, 0, -100]];
  two optima of 10 that miscoordinate into -100.
- `nonmonotonic` (Weighted QMIX, Rashid et al. 2020): [[8, -12, -12], [-12, 0, 0], [-12, 0, 0]];
  the optimum 8 cannot be represented by a monotonic mixer trained on uniform data.

A table can also be given as a nested list, or its text (`"[[1, 0], [0, 1]]"`), so that
`--config.env.payoff='[[...],[...]]'` works on the command line.
"""
from __future__ import annotations

import ast
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from envs.marl.core import Env, TimeStep, timestep

NAME = "matrix"
NAMED_PAYOFFS = {
    "climbing": [[11, -30, 0], [-30, 7, 6], [0, 0, 5]],
    "penalty": [[-100, 0, 10], [0, 2, 0], [10, 0, -100]],
    "nonmonotonic": [[8, -12, -12], [-12, 0, 0], [-12, 0, 0]],
}


def parse_payoff(payoff: str | Sequence) -> np.ndarray:
  """A payoff table as float32[A, ..., A] (one axis per agent) from a name, text or nested list."""
  if isinstance(payoff, str):
    text = payoff.strip()
    if text in NAMED_PAYOFFS:
      payoff = NAMED_PAYOFFS[text]
    else:
      try:
        payoff = ast.literal_eval(text)
      except (ValueError, SyntaxError) as e:
        raise ValueError(f"payoff={text!r}: expected one of {sorted(NAMED_PAYOFFS)} or a nested "
                         "list such as '[[1, 0], [0, 1]]'") from e
  try:
    table = np.asarray(payoff, np.float32)
  except ValueError as e:
    raise ValueError(f"payoff {payoff!r} is not a rectangular table") from e
  if table.ndim < 2 or len(set(table.shape)) != 1 or table.shape[0] < 2:
    raise ValueError(f"payoff must have one axis per agent (at least 2) of the same number "
                     f"(>= 2) of actions; got shape {table.shape}")
  return table


def make(payoff: str | Sequence = "climbing") -> Env:
  """The one-shot game of `payoff` (a name, a table's text, or a nested list)."""
  table = parse_payoff(payoff)
  num_agents, num_actions = table.ndim, table.shape[0]

  def observe(reward, done) -> TimeStep:
    return timestep(obs=jnp.ones((num_agents, 1)), state=jnp.ones((1,)),
                    avail=jnp.ones((num_agents, num_actions), bool), reward=reward, done=done)

  def reset(key: jax.Array) -> tuple[jax.Array, TimeStep]:
    del key
    return jnp.bool_(False), observe(0.0, False)

  def step(key: jax.Array, ended: jax.Array, actions: jax.Array) -> tuple[jax.Array, TimeStep]:
    del key
    reward = jnp.where(ended, 0.0, jnp.asarray(table)[tuple(actions)])
    return jnp.bool_(True), observe(reward, True)

  return Env(name=NAME, num_agents=num_agents, num_actions=num_actions, obs_dim=1, state_dim=1,
             max_steps=1, reset=reset, step=step)
