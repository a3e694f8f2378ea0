"""Meet on a grid: a small cooperative task with partial observability.

N agents (default 2) start on distinct random cells of a `size` x `size` grid. Each step every
agent stays or moves one cell (0 stay, 1 up, 2 down, 3 left, 4 right; a move off the grid is
unavailable). When all agents stand on the same cell the team gets reward 1 and the episode
ends; otherwise it ends with return 0 after `max_steps` steps. The discount makes meeting
sooner worth more.

Partial observability: an agent observes its own row and column (one-hot) and a
(2 `view` + 1)^2 window around itself counting the other agents in each cell, so it sees a
partner only when the partner is near. Agents that cannot see each other must agree on a
convention (a meeting cell) through training. The global state (for the mixer) is every
agent's row and column one-hot plus the elapsed fraction of the time limit.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from envs.marl.core import Env, TimeStep, timestep

NAME = "meet_grid"
MOVES = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))  # stay, up, down, left, right (row, col)


@flax.struct.dataclass
class GridState:
  positions: jax.Array  # int32[N, 2]: (row, col) per agent
  t: jax.Array  # int32[]: steps taken


def make(size: int = 5, num_agents: int = 2, view: int = 1, max_steps: int = 10) -> Env:
  """The meeting game on a `size` x `size` grid with a (2 `view` + 1)^2 window per agent."""
  if size < 2 or num_agents < 2 or view < 0 or max_steps < 1:
    raise ValueError(f"meet_grid needs size >= 2, num_agents >= 2, view >= 0, max_steps >= 1; "
                     f"got size={size}, num_agents={num_agents}, view={view}, "
                     f"max_steps={max_steps}")
  if num_agents > size * size:
    raise ValueError(f"{num_agents} agents do not fit on distinct cells of a {size}x{size} grid")
  moves = jnp.asarray(MOVES, jnp.int32)
  width = 2 * view + 1
  offsets = jnp.stack(jnp.meshgrid(jnp.arange(-view, view + 1), jnp.arange(-view, view + 1),
                                   indexing="ij"), -1).reshape(-1, 2)  # [width^2, 2]

  def observe(state: GridState, reward, done) -> TimeStep:
    pos = state.positions
    own = jnp.concatenate([jax.nn.one_hot(pos[:, 0], size), jax.nn.one_hot(pos[:, 1], size)], -1)
    relative = pos[None, :, :] - pos[:, None, :]  # [i, j, 2]: j's offset seen from i
    others = ~jnp.eye(num_agents, dtype=bool)
    in_cell = jnp.all(relative[:, :, None, :] == offsets[None, None, :, :], -1)  # [i, j, cell]
    window = jnp.sum(in_cell & others[:, :, None], axis=1).astype(jnp.float32)  # [i, cell]
    rows, cols = pos[:, 0:1], pos[:, 1:2]
    avail = jnp.stack([jnp.ones_like(rows[:, 0], bool), rows[:, 0] > 0, rows[:, 0] < size - 1,
                       cols[:, 0] > 0, cols[:, 0] < size - 1], -1)
    global_state = jnp.concatenate([own.reshape(-1), (state.t / max_steps)[None]])
    return timestep(obs=jnp.concatenate([own, window], -1), state=global_state, avail=avail,
                    reward=reward, done=done)

  def reset(key: jax.Array) -> tuple[GridState, TimeStep]:
    cells = jax.random.choice(key, size * size, (num_agents,), replace=False)
    state = GridState(positions=jnp.stack([cells // size, cells % size], -1).astype(jnp.int32),
                      t=jnp.int32(0))
    return state, observe(state, 0.0, False)

  def step(key: jax.Array, state: GridState, actions: jax.Array) -> tuple[GridState, TimeStep]:
    del key
    positions = jnp.clip(state.positions + moves[actions], 0, size - 1)
    state = GridState(positions=positions, t=state.t + 1)
    met = jnp.all(positions == positions[0])
    return state, observe(state, met.astype(jnp.float32), met | (state.t >= max_steps))

  obs_dim = 2 * size + width * width
  return Env(name=NAME, num_agents=num_agents, num_actions=len(MOVES), obs_dim=obs_dim,
             state_dim=2 * size * num_agents + 1, max_steps=max_steps, reset=reset, step=step)
