"""QMIX (Rashid et al. 2018) and VDN (Sunehag et al. 2018): monotonic value factorisation.

  Q_tot(s, u) = elu(q . |W1(s)| + b1(s)) . |W2(s)| + V(s)      QMIX, dQ_tot/dq_i >= 0
  Q_tot(s, u) = sum_i q_i                                      VDN
  q_i = Q(o_i, onehot(i); theta)[u_i]                          agents share theta
  y_t = c r_t + gamma (1 - d_t) [(1 - lambda) Q'_tot(s_{t+1}, u*_{t+1}) + lambda y_{t+1}]
  u*_{t+1, i} = argmax_{available u} Q(o_{t+1, i}, u; theta)   double Q: online argmax,
                                                               target network (') value
  L = sum_t m_t (Q_tot(s_t, u_t) - y_t)^2 / sum_t m_t          m_t: step t is in the episode

c is `reward_scale` (1 by default), lambda = 0 the 1-step TD target; with `train_terminal`
False, m_t is also 0 on an episode's last step (JaxMARL trains fixed 26-step MPE chunks on
their first 25 transitions). W1, W2 come from hypernetworks of the global state
(two layers), b1 from one linear layer and V(s) from two. The mixer is a standalone pair
(`init_mixer`, `mix`) so that other algorithms can use it as a factorised critic.

Training (PureJaxRL style): `make_train(cfg, env, num_updates)` returns `train(key)`, one
`jax.jit`-able function whose `lax.scan` runs `num_updates` updates; `jax.vmap(train)` over keys
runs many seeds at once. One update collects `num_envs` episodes with epsilon-greedy agents
(or, with `fragment_steps` = K > 0, K steps of each of `num_envs` envs that restart when an
episode ends, as JaxMARL's NUM_STEPS; the recurrent state restarts with each episode, and d_t
marks the ends inside a fragment), adds them to an episode replay buffer (a pytree, sampled
uniformly with replacement), takes `epochs` gradient steps (1 by default), each on
`batch_size` sampled episodes, once `learning_starts` episodes are stored, and copies the
online network into the target network every `target_update_interval` updates (or moves it by
`target_tau` each update). Update u draws its randomness from
`fold_in(runner.key, u)`, so running the updates in chunks gives the same run.

The environment is duck-typed (`envs.marl.core.Env`): `num_agents, num_actions, obs_dim,
state_dim, max_steps` and `reset(key) / step(key, env_state, actions)` returning time steps
with `obs[N, O], state[S], avail[N, A], reward[], done[]`.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import chex
import flax.struct
import jax
import jax.numpy as jnp
import optax

Params = dict[str, Any]
_NEG = -1e9  # the Q of an unavailable action in an argmax (finite, unlike -inf)


# ---------------------------------------------------------------------------------------------
# Layers.


INITS = ("uniform", "orthogonal")


def orthogonal(key: jax.Array, shape: tuple[int, int], scale: float = 1.0) -> jax.Array:
  """A random matrix with orthonormal columns (or rows, when wider than tall) times `scale`:
  the Q of a Gaussian matrix's QR factorisation with R's diagonal positive, i.e. the
  distribution of `jax.nn.initializers.orthogonal`, by Gram-Schmidt with re-orthogonalisation.

  Written with matmuls rather than LAPACK: on XLA:CPU (jax 0.10.2), a program holding several
  vmapped `jnp.linalg.qr` calls (the init of a few seeds' networks) never finishes.
  """
  rows, cols = shape
  tall = (max(rows, cols), min(rows, cols))
  a = jax.random.normal(key, tall, jnp.float32)

  def column(j, q):
    v = a[:, j]
    earlier = (jnp.arange(tall[1]) < j).astype(jnp.float32)
    for _ in range(2):  # a second pass restores orthogonality lost to rounding
      v = v - q @ (earlier * (q.T @ v))
    return q.at[:, j].set(v / jnp.linalg.norm(v))

  q = jax.lax.fori_loop(0, tall[1], column, jnp.zeros(tall, jnp.float32))
  return scale * (q if rows >= cols else q.T)


def _dense_init(key: jax.Array, fan_in: int, fan_out: int, init: str = "uniform",
                scale: float = 1.0) -> Params:
  """Zero bias; weights uniform in +-1/sqrt(fan_in) (`uniform`, PyTorch's default for linear
  layers, as pymarl) or orthogonal times `scale` (`orthogonal`, as JaxMARL's baselines)."""
  if init == "orthogonal":
    w = orthogonal(key, (fan_in, fan_out), scale)
  else:
    bound = 1.0 / jnp.sqrt(fan_in)
    w = jax.random.uniform(key, (fan_in, fan_out), jnp.float32, -bound, bound)
  return {"w": w, "b": jnp.zeros((fan_out,), jnp.float32)}


def _dense(params: Params, x: jax.Array) -> jax.Array:
  return x @ params["w"] + params["b"]


def _mlp(params: list[Params], x: jax.Array) -> jax.Array:
  """Dense layers with ReLU between them (none after the last)."""
  for layer in params[:-1]:
    x = jax.nn.relu(_dense(layer, x))
  return _dense(params[-1], x)


# ---------------------------------------------------------------------------------------------
# Mixers.


def init_mixer(key: jax.Array, num_agents: int, state_dim: int, *, embed_dim: int = 32,
               hypernet_hidden: int = 64, init: str = "uniform", scale: float = 1.0) -> Params:
  """QMIX mixing-network parameters: the hypernetworks of W1, b1, W2 and V(s), every layer
  initialised by `init` (`scale`: the orthogonal gain; JaxMARL's mixer uses 0.001)."""
  k = jax.random.split(key, 7)
  dense = functools.partial(_dense_init, init=init, scale=scale)
  return {
      "hyper_w1": [dense(k[0], state_dim, hypernet_hidden),
                   dense(k[1], hypernet_hidden, num_agents * embed_dim)],
      "hyper_b1": [dense(k[2], state_dim, embed_dim)],
      "hyper_w2": [dense(k[3], state_dim, hypernet_hidden),
                   dense(k[4], hypernet_hidden, embed_dim)],
      "value": [dense(k[5], state_dim, embed_dim), dense(k[6], embed_dim, 1)],
  }


def mix(params: Params, agent_qs: jax.Array, state: jax.Array) -> jax.Array:
  """QMIX: Q_tot = elu(q . |W1(s)| + b1(s)) . |W2(s)| + V(s), monotonic in every q_i.

  Args:
    params: from `init_mixer`.
    agent_qs: float[..., N], one utility per agent (any leading batch axes).
    state: float[..., S], the global state, with the same leading axes.

  Returns:
    float[...]: the mixed Q_tot.
  """
  num_agents = agent_qs.shape[-1]
  chex.assert_equal_shape_prefix([agent_qs, state], agent_qs.ndim - 1)
  chex.assert_axis_dimension(state, -1, params["hyper_b1"][0]["w"].shape[0])
  embed_dim = params["hyper_b1"][0]["w"].shape[1]
  w1 = jnp.abs(_mlp(params["hyper_w1"], state)).reshape(*state.shape[:-1], num_agents, embed_dim)
  b1 = _mlp(params["hyper_b1"], state)
  hidden = jax.nn.elu(jnp.einsum("...n,...ne->...e", agent_qs, w1) + b1)
  w2 = jnp.abs(_mlp(params["hyper_w2"], state))
  v = _mlp(params["value"], state)[..., 0]
  return jnp.sum(hidden * w2, -1) + v


def vdn(agent_qs: jax.Array, state: jax.Array | None = None) -> jax.Array:
  """VDN: Q_tot = sum_i q_i (`state` is accepted for a common signature and ignored)."""
  del state
  return jnp.sum(agent_qs, -1)


class Mixer(NamedTuple):
  """A mixer by kind: `init(key) -> params` and `apply(params, agent_qs, state) -> q_tot`."""

  init: Callable[[jax.Array], Params]
  apply: Callable[[Params, jax.Array, jax.Array], jax.Array]


def make_mixer(kind: str, num_agents: int, state_dim: int, *, embed_dim: int = 32,
               hypernet_hidden: int = 64, init: str = "uniform", scale: float = 1.0) -> Mixer:
  """`qmix` (hypernetwork mixer) or `vdn` (sum, no parameters)."""
  if kind == "qmix":
    return Mixer(init=lambda key: init_mixer(key, num_agents, state_dim, embed_dim=embed_dim,
                                             hypernet_hidden=hypernet_hidden, init=init,
                                             scale=scale),
                 apply=mix)
  if kind == "vdn":
    return Mixer(init=lambda key: {}, apply=lambda params, qs, state: vdn(qs, state))
  raise ValueError(f"mixer={kind!r}: choose 'qmix' or 'vdn'")


# ---------------------------------------------------------------------------------------------
# Agent networks: one set of parameters shared by all agents, the agent id one-hot in the input.


def _orthogonal_gru_init(key: jax.Array, hidden_dim: int) -> Params:
  """GRU weights for the r, z, n gates side by side, as flax's GRUCell (which JaxMARL's
  agents use): lecun-normal input kernels, an orthogonal recurrent kernel per gate, zero bias."""
  in_keys, hidden_keys = jax.random.split(key, (2, 3))
  shape = (hidden_dim, hidden_dim)
  w_i = jnp.concatenate([jax.nn.initializers.lecun_normal()(k, shape) for k in in_keys], -1)
  w_h = jnp.concatenate([orthogonal(k, shape) for k in hidden_keys], -1)
  zeros = jnp.zeros((3 * hidden_dim,), jnp.float32)
  return {"w_i": w_i, "b_i": zeros, "w_h": w_h, "b_h": zeros}


def init_agent(key: jax.Array, kind: str, obs_dim: int, num_agents: int, num_actions: int,
               hidden_dim: int = 64, init: str = "uniform", scale: float = 1.0) -> Params:
  """`ff`: obs -> relu -> relu -> Q; `gru`: obs -> relu -> GRU cell -> Q (pymarl's RNN agent).
  Dense layers are initialised by `init` with gain `scale` (see `_dense_init`)."""
  k = jax.random.split(key, 5)
  in_dim = obs_dim + num_agents
  dense = functools.partial(_dense_init, init=init, scale=scale)
  if kind == "ff":
    return {"layers": [dense(k[0], in_dim, hidden_dim),
                       dense(k[1], hidden_dim, hidden_dim),
                       dense(k[2], hidden_dim, num_actions)]}
  if kind == "gru":
    if init == "orthogonal":
      gru = _orthogonal_gru_init(k[1], hidden_dim)
    else:  # PyTorch's GRU: +-1/sqrt(H) everywhere
      gru_in = _dense_init(k[1], hidden_dim, 3 * hidden_dim)
      gru_hidden = _dense_init(k[2], hidden_dim, 3 * hidden_dim)
      gru = {"w_i": gru_in["w"], "b_i": gru_in["b"], "w_h": gru_hidden["w"],
             "b_h": gru_hidden["b"]}
    return {"encoder": dense(k[0], in_dim, hidden_dim), "gru": gru,
            "head": dense(k[3], hidden_dim, num_actions)}
  raise ValueError(f"agent={kind!r}: choose 'ff' or 'gru'")


def agent_inputs(obs: jax.Array) -> jax.Array:
  """float[..., N, O] -> float[..., N, O + N]: each agent's observation and its id one-hot."""
  num_agents = obs.shape[-2]
  ids = jnp.broadcast_to(jnp.eye(num_agents, dtype=obs.dtype), (*obs.shape[:-2], num_agents,
                                                                 num_agents))
  return jnp.concatenate([obs, ids], -1)


def init_hidden(agent_params: Params, batch_shape: tuple[int, ...]) -> jax.Array:
  """The zero recurrent state float[*batch_shape, H] (width 0 for a feed-forward agent)."""
  width = agent_params["gru"]["w_h"].shape[0] if "gru" in agent_params else 0
  return jnp.zeros((*batch_shape, width), jnp.float32)


def _gru_cell(params: Params, x: jax.Array, h: jax.Array) -> jax.Array:
  """h' = (1 - z) n + z h with r, z gates and n = tanh(x W_in + b_in + r (h W_hn + b_hn))."""
  xr, xz, xn = jnp.split(x @ params["w_i"] + params["b_i"], 3, -1)
  hr, hz, hn = jnp.split(h @ params["w_h"] + params["b_h"], 3, -1)
  r = jax.nn.sigmoid(xr + hr)
  z = jax.nn.sigmoid(xz + hz)
  n = jnp.tanh(xn + r * hn)
  return (1.0 - z) * n + z * h


def agent_step(agent_params: Params, inputs: jax.Array, hidden: jax.Array
               ) -> tuple[jax.Array, jax.Array]:
  """One step of the agent network: (float[..., I], float[..., H]) -> (Q[..., A], hidden)."""
  if "gru" not in agent_params:
    return _mlp(agent_params["layers"], inputs), hidden
  x = jax.nn.relu(_dense(agent_params["encoder"], inputs))
  hidden = _gru_cell(agent_params["gru"], x, hidden)
  return _dense(agent_params["head"], hidden), hidden


def episode_q_values(agent_params: Params, obs: jax.Array, resets: jax.Array | None = None
                     ) -> jax.Array:
  """Q float[B, T, N, A] of obs float[B, T, N, O], the recurrent state from 0 at t = 0 and, where
  `resets` bool[B, T] is given, at every step t it marks (the first step of a new episode)."""
  inputs = agent_inputs(obs)
  if "gru" not in agent_params:
    return agent_step(agent_params, inputs, init_hidden(agent_params, ()))[0]
  time_major = jnp.swapaxes(inputs, 0, 1)  # [T, B, N, I]

  def one_step(hidden, x):
    q, hidden = agent_step(agent_params, x, hidden)
    return hidden, q

  def one_step_with_reset(hidden, xs):
    x, reset = xs
    return one_step(jnp.where(reset[:, None, None], 0.0, hidden), x)

  hidden = init_hidden(agent_params, time_major.shape[1:3])
  if resets is None:
    _, qs = jax.lax.scan(one_step, hidden, time_major)
  else:
    chex.assert_equal_shape([resets, obs[..., 0, 0]])
    _, qs = jax.lax.scan(one_step_with_reset, hidden, (time_major, jnp.swapaxes(resets, 0, 1)))
  return jnp.swapaxes(qs, 0, 1)


# ---------------------------------------------------------------------------------------------
# Acting.


def masked_argmax(q: jax.Array, avail: jax.Array) -> jax.Array:
  """int32[...]: the best available action of q float[..., A] (ties: the lowest index)."""
  return jnp.argmax(jnp.where(avail, q, _NEG), -1).astype(jnp.int32)


def epsilon_greedy(key: jax.Array, q: jax.Array, avail: jax.Array, epsilon: jax.Array | float
                   ) -> jax.Array:
  """With probability epsilon a uniformly random available action, else the greedy one."""
  explore_key, action_key = jax.random.split(key)
  explore = jax.random.uniform(explore_key, q.shape[:-1]) < epsilon
  random = jax.random.categorical(action_key, jnp.where(avail, 0.0, -jnp.inf)).astype(jnp.int32)
  return jnp.where(explore, random, masked_argmax(q, avail))


def epsilon_schedule(t: jax.Array | int, start: float, finish: float, anneal_steps: int
                     ) -> jax.Array:
  """Linear from `start` at t = 0 to `finish` at t = anneal_steps, constant after."""
  fraction = jnp.clip(jnp.asarray(t, jnp.float32) / max(anneal_steps, 1), 0.0, 1.0)
  return start + fraction * (finish - start)


# ---------------------------------------------------------------------------------------------
# Targets.


def double_q_next_values(q_online: jax.Array, q_target: jax.Array, avail: jax.Array,
                         *, double_q: bool = True) -> jax.Array:
  """Per-agent bootstrap utilities float[..., N] at the next step.

  Double Q picks u* = argmax over available actions of the online Q and reads the target Q at
  u*; without it, the max over available actions of the target Q.
  """
  chex.assert_equal_shape([q_online, q_target])
  chex.assert_equal_shape([q_online, avail])
  chooser = jax.lax.stop_gradient(q_online) if double_q else q_target
  best = masked_argmax(chooser, avail)
  return jnp.take_along_axis(q_target, best[..., None], -1)[..., 0]


def lambda_returns(rewards: jax.Array, dones: jax.Array, next_values: jax.Array, *,
                   gamma: float, td_lambda: float) -> jax.Array:
  """TD(lambda) targets along the last (time) axis.

  y_t = r_t + gamma (1 - d_t) [(1 - lambda) v_{t+1} + lambda y_{t+1}], and at the last step
  y_{T-1} = r_{T-1} + gamma (1 - d_{T-1}) v_T, where next_values[..., t] = v_{t+1} is the target
  Q_tot of the state after step t. lambda = 0 gives the 1-step target r_t + gamma (1 - d_t)
  v_{t+1}. Steps after an episode's end do not change the targets of steps inside it.
  """
  chex.assert_equal_shape([rewards, dones, next_values])
  not_done = 1.0 - dones.astype(jnp.float32)
  rewards_t, not_done_t, next_t = (jnp.moveaxis(x, -1, 0) for x in (rewards, not_done,
                                                                    next_values))

  def backward(later, xs):
    reward, alive, value = xs
    target = reward + gamma * alive * ((1.0 - td_lambda) * value + td_lambda * later)
    return target, target

  _, targets = jax.lax.scan(backward, next_t[-1], (rewards_t, not_done_t, next_t), reverse=True)
  return jnp.moveaxis(targets, 0, -1)


def one_step_targets(rewards: jax.Array, dones: jax.Array, next_values: jax.Array, *,
                     gamma: float) -> jax.Array:
  """y_t = r_t + gamma (1 - d_t) v_{t+1}."""
  return rewards + gamma * (1.0 - dones.astype(jnp.float32)) * next_values


def update_target(target: Params, online: Params, updates: jax.Array, *, interval: int,
                  tau: float = 0.0) -> Params:
  """A hard copy every `interval` updates (tau = 0), or target <- tau online + (1 - tau) target."""
  if tau > 0.0:
    return optax.incremental_update(online, target, tau)
  copy = (updates % interval) == 0
  return jax.tree.map(lambda o, t: jnp.where(copy, o, t), online, target)


# ---------------------------------------------------------------------------------------------
# Episode replay buffer.


@flax.struct.dataclass
class Episode:
  """One episode (or a batch, with leading axes), padded to the env's `max_steps` = T."""

  obs: jax.Array  # float32[T+1, N, O]
  state: jax.Array  # float32[T+1, S]
  avail: jax.Array  # bool[T+1, N, A]
  actions: jax.Array  # int32[T, N]
  rewards: jax.Array  # float32[T]
  dones: jax.Array  # bool[T]: the episode ended at this step (and after it)
  mask: jax.Array  # float32[T]: 1 for steps inside the episode


@flax.struct.dataclass
class EpisodeBuffer:
  """A ring of `capacity` episodes; `size` of them are filled, the next goes to `position`."""

  episodes: Episode  # leaves with a leading capacity axis
  position: jax.Array  # int32[]
  size: jax.Array  # int32[]

  @property
  def capacity(self) -> int:
    return self.episodes.rewards.shape[0]


def buffer_init(capacity: int, example: Episode) -> EpisodeBuffer:
  """An empty buffer for episodes shaped like `example` (one episode, no batch axis)."""
  episodes = jax.tree.map(lambda x: jnp.zeros((capacity, *x.shape), x.dtype), example)
  return EpisodeBuffer(episodes=episodes, position=jnp.int32(0), size=jnp.int32(0))


def buffer_add(buffer: EpisodeBuffer, episodes: Episode) -> EpisodeBuffer:
  """Writes a batch of E episodes at the ring position, overwriting the oldest when full."""
  count = episodes.rewards.shape[0]
  slots = (buffer.position + jnp.arange(count)) % buffer.capacity
  stored = jax.tree.map(lambda store, new: store.at[slots].set(new), buffer.episodes, episodes)
  return EpisodeBuffer(episodes=stored, position=(buffer.position + count) % buffer.capacity,
                       size=jnp.minimum(buffer.size + count, buffer.capacity))


def buffer_sample(buffer: EpisodeBuffer, key: jax.Array, batch_size: int) -> Episode:
  """`batch_size` stored episodes, uniformly with replacement (slot 0 while empty)."""
  index = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1))
  return jax.tree.map(lambda x: x[index], buffer.episodes)


# ---------------------------------------------------------------------------------------------
# Configuration.


@dataclasses.dataclass(frozen=True)
class Config:
  """Hyperparameters. Defaults follow pymarl's QMIX (RNN agents, embed 32, hypernetworks 64,
  lr 5e-4, target copy every 200 updates, epsilon 1 -> 0.05 over 50k steps, 5000 episodes
  stored, 32 per batch, gradient norm 10), except Adam in place of its RMSprop (available as
  `optimizer="rmsprop"`), which fits the two-step game's values more tightly here."""

  mixer: str = "qmix"  # qmix | vdn
  agent: str = "gru"  # gru | ff
  hidden_dim: int = 64
  mixer_embed_dim: int = 32
  hypernet_hidden: int = 64
  gamma: float = 0.99
  td_lambda: float = 0.0  # 0: 1-step TD; pymarl2 uses 0.6
  double_q: bool = True
  optimizer: str = "adam"  # adam | rmsprop (alpha 0.99, eps 1e-5, as pymarl) | radam
  lr: float = 5e-4
  lr_schedule: str = "constant"  # constant | linear (to 0 over lr_decay_updates, as JaxMARL)
  lr_decay_updates: int = 0  # gradient steps of the linear decay (a job sets its run's length)
  init: str = "uniform"  # uniform (PyTorch's, as pymarl) | orthogonal (as JaxMARL)
  agent_init_scale: float = 1.0  # orthogonal gain of the agent's dense layers
  mixer_init_scale: float = 1.0  # orthogonal gain of the mixer's layers (JaxMARL: 0.001)
  train_terminal: bool = True  # False: no TD error on an episode's last step (as JaxMARL's MPE)
  reward_scale: float = 1.0  # rewards are multiplied by it in the TD targets (JaxMARL SMAX: 10)
  max_grad_norm: float = 10.0
  num_envs: int = 8  # episodes (or fragments) collected per update
  fragment_steps: int = 0  # 0: store whole episodes; > 0: slices of restarting envs (JaxMARL)
  batch_size: int = 32  # episodes per gradient step
  epochs: int = 1  # gradient steps per update, each on a new sampled batch (JaxMARL NUM_EPOCHS)
  buffer_size: int = 5000  # episodes (or fragments)
  learning_starts: int = 32  # episodes stored before the first gradient step
  target_update_interval: int = 200  # updates between hard target copies
  target_tau: float = 0.0  # > 0: Polyak updates every step instead
  epsilon_start: float = 1.0
  epsilon_finish: float = 0.05
  epsilon_anneal_steps: int = 50_000  # env transitions
  eval_episodes: int = 32


def default_config() -> dict[str, Any]:
  return dataclasses.asdict(Config())


def make_config(values: Mapping[str, Any]) -> Config:
  """A `Config` from a mapping; an unknown key or an impossible value is a ValueError."""
  known = {f.name for f in dataclasses.fields(Config)}
  unknown = sorted(set(values) - known)
  if unknown:
    raise ValueError(f"unknown QMIX config keys {unknown}; known: {sorted(known)}")
  cfg = Config(**dict(values))
  checks = {
      "mixer": cfg.mixer in ("qmix", "vdn"),
      "agent": cfg.agent in ("ff", "gru"),
      "optimizer": cfg.optimizer in ("rmsprop", "adam", "radam"),
      "lr_schedule": cfg.lr_schedule in ("constant", "linear"),
      "lr_decay_updates": cfg.lr_decay_updates >= (cfg.lr_schedule == "linear"),
      "init": cfg.init in INITS,
      "gamma": 0.0 <= cfg.gamma <= 1.0,
      "td_lambda": 0.0 <= cfg.td_lambda <= 1.0,
      "epsilon_start": 0.0 <= cfg.epsilon_start <= 1.0,
      "epsilon_finish": 0.0 <= cfg.epsilon_finish <= 1.0,
      "target_tau": 0.0 <= cfg.target_tau <= 1.0,
      "fragment_steps": cfg.fragment_steps >= 0,
  }
  positive = ("hidden_dim", "mixer_embed_dim", "hypernet_hidden", "lr", "num_envs",
              "batch_size", "buffer_size", "target_update_interval", "eval_episodes",
              "agent_init_scale", "mixer_init_scale", "reward_scale", "epochs")
  checks.update({name: getattr(cfg, name) > 0 for name in positive})
  checks["learning_starts"] = 1 <= cfg.learning_starts <= cfg.buffer_size
  bad = [f"{name}={getattr(cfg, name)!r}" for name, ok in checks.items() if not ok]
  if bad:
    raise ValueError(f"invalid QMIX config values: {', '.join(bad)}")
  return cfg


def learning_rate(cfg: Config) -> optax.ScalarOrSchedule:
  """`lr`, or (`linear`) lr * (1 - n / lr_decay_updates) at gradient step n, 0 after."""
  if cfg.lr_schedule == "linear":
    return optax.linear_schedule(cfg.lr, 0.0, cfg.lr_decay_updates)
  return cfg.lr


def make_optimizer(cfg: Config) -> optax.GradientTransformation:
  """Gradient-norm clipping, then RMSprop (alpha 0.99, eps 1e-5, as pymarl), Adam or RAdam
  (as JaxMARL's baselines). A schedule counts the gradient steps taken, not updates."""
  lr = learning_rate(cfg)
  if cfg.optimizer == "rmsprop":
    inner = optax.rmsprop(lr, decay=0.99, eps=1e-5)
  elif cfg.optimizer == "radam":
    inner = optax.radam(lr)
  else:
    inner = optax.adam(lr)
  return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), inner)


def config_mixer(cfg: Config, env: Any) -> Mixer:
  """The mixer `cfg` describes for `env`."""
  return make_mixer(cfg.mixer, env.num_agents, env.state_dim, embed_dim=cfg.mixer_embed_dim,
                    hypernet_hidden=cfg.hypernet_hidden, init=cfg.init,
                    scale=cfg.mixer_init_scale)


def init_params(key: jax.Array, cfg: Config, env: Any) -> Params:
  """`{"agent": shared agent network, "mixer": mixer (empty for VDN)}`."""
  agent_key, mixer_key = jax.random.split(key)
  return {"agent": init_agent(agent_key, cfg.agent, env.obs_dim, env.num_agents,
                              env.num_actions, cfg.hidden_dim, init=cfg.init,
                              scale=cfg.agent_init_scale),
          "mixer": config_mixer(cfg, env).init(mixer_key)}


# ---------------------------------------------------------------------------------------------
# Rollouts.


class RolloutCarry(NamedTuple):
  """What an episode carries from step to step (per env; a batch of envs adds leading axes)."""

  env_state: Any
  ts: Any  # the env's last TimeStep
  hidden: jax.Array  # float32[N, H]: the agents' recurrent state
  alive: jax.Array  # bool[]: the episode has not ended


def episode_start(env: Any, agent_params: Params, key: jax.Array) -> RolloutCarry:
  """A fresh episode: the env reset by `key`, the agents' recurrent state at 0."""
  env_state, ts = env.reset(key)
  return RolloutCarry(env_state=env_state, ts=ts,
                      hidden=init_hidden(agent_params, (env.num_agents,)), alive=jnp.bool_(True))


def rollout_reset(env: Any, agent_params: Params, key: jax.Array
                  ) -> tuple[RolloutCarry, jax.Array]:
  """An episode's start and the keys of its `env.max_steps` steps."""
  reset_key, steps_key = jax.random.split(key)
  return (episode_start(env, agent_params, reset_key),
          jax.random.split(steps_key, env.max_steps))


def act_and_step(env: Any, agent_params: Params, epsilon: jax.Array | float,
                 carry: RolloutCarry, key: jax.Array) -> tuple[jax.Array, jax.Array, Any, Any]:
  """Epsilon-greedy actions at `carry.ts` and the env's step on them: (actions[N], the agents'
  next recurrent state, the next env state, the next time step)."""
  act_key, env_key = jax.random.split(key)
  q, hidden = agent_step(agent_params, agent_inputs(carry.ts.obs), carry.hidden)
  actions = epsilon_greedy(act_key, q, carry.ts.avail, epsilon)
  next_env_state, next_ts = env.step(env_key, carry.env_state, actions)
  return actions, hidden, next_env_state, next_ts


def rollout_step(env: Any, agent_params: Params, epsilon: jax.Array | float,
                 carry: RolloutCarry, key: jax.Array) -> tuple[RolloutCarry, tuple]:
  """One epsilon-greedy step; once the episode has ended the carry is frozen and the step is
  recorded as padding. Returns the next carry and the step's record."""
  ts, alive = carry.ts, carry.alive
  actions, hidden, next_env_state, next_ts = act_and_step(env, agent_params, epsilon, carry, key)
  record = (ts.obs, ts.state, ts.avail, actions, jnp.where(alive, next_ts.reward, 0.0),
            next_ts.done | ~alive, alive.astype(jnp.float32))
  keep = lambda new, old: jnp.where(alive, new, old)
  carry = RolloutCarry(env_state=jax.tree.map(keep, next_env_state, carry.env_state),
                       ts=jax.tree.map(keep, next_ts, ts), hidden=hidden,
                       alive=alive & ~next_ts.done)
  return carry, record


def rollout_episode(records: tuple, last: RolloutCarry) -> Episode:
  """The `Episode` of a rollout's per-step records (stacked on a leading time axis) and its
  final carry."""
  obs, state, avail, actions, rewards, dones, mask = records
  return Episode(obs=jnp.concatenate([obs, last.ts.obs[None]]),
                 state=jnp.concatenate([state, last.ts.state[None]]),
                 avail=jnp.concatenate([avail, last.ts.avail[None]]), actions=actions,
                 rewards=rewards, dones=dones, mask=mask)


def rollout(env: Any, agent_params: Params, key: jax.Array, epsilon: jax.Array | float
            ) -> Episode:
  """One epsilon-greedy episode of `env.max_steps` steps; steps after the end are padding."""
  carry, step_keys = rollout_reset(env, agent_params, key)
  last, records = jax.lax.scan(functools.partial(rollout_step, env, agent_params, epsilon),
                               carry, step_keys)
  return rollout_episode(records, last)


def rollout_fragment(env: Any, agent_params: Params, key: jax.Array, epsilon: jax.Array | float,
                     steps: int) -> Episode:
  """`steps` epsilon-greedy transitions from a fresh reset, the env restarting as soon as an
  episode ends (the agents' recurrent state from 0 again): JaxMARL's NUM_STEPS slices of
  auto-resetting envs. Every step is a transition (mask 1); `dones` marks each episode's last
  step, and `obs[t + 1]` after it is the next episode's first observation."""
  reset_key, steps_key = jax.random.split(key)
  carry = episode_start(env, agent_params, reset_key)

  def step(carry: RolloutCarry, key: jax.Array) -> tuple[RolloutCarry, tuple]:
    step_key, restart_key = jax.random.split(key)
    actions, hidden, next_env_state, next_ts = act_and_step(env, agent_params, epsilon, carry,
                                                            step_key)
    ts = carry.ts
    record = (ts.obs, ts.state, ts.avail, actions, next_ts.reward, next_ts.done, jnp.float32(1))
    fresh = episode_start(env, agent_params, restart_key)
    restart = lambda new, old: jnp.where(next_ts.done, new, old)
    carry = RolloutCarry(env_state=jax.tree.map(restart, fresh.env_state, next_env_state),
                         ts=jax.tree.map(restart, fresh.ts, next_ts),
                         hidden=restart(fresh.hidden, hidden), alive=jnp.bool_(True))
    return carry, record

  last, records = jax.lax.scan(step, carry, jax.random.split(steps_key, steps))
  return rollout_episode(records, last)


def collect(cfg: Config, env: Any, agent_params: Params, key: jax.Array,
            epsilon: jax.Array | float) -> Episode:
  """What one update stores: `num_envs` whole episodes, or with `fragment_steps` > 0 that many
  steps of each of `num_envs` restarting envs (leading axis num_envs)."""
  keys = jax.random.split(key, cfg.num_envs)
  if cfg.fragment_steps:
    return jax.vmap(lambda k: rollout_fragment(env, agent_params, k, epsilon,
                                               cfg.fragment_steps))(keys)
  return jax.vmap(lambda k: rollout(env, agent_params, k, epsilon))(keys)


def greedy_return(env: Any, agent_params: Params, key: jax.Array, num_episodes: int
                  ) -> jax.Array:
  """Mean undiscounted return of `num_episodes` greedy (epsilon 0) episodes."""
  episodes = jax.vmap(lambda k: rollout(env, agent_params, k, 0.0))(
      jax.random.split(key, num_episodes))
  return jnp.mean(jnp.sum(episodes.rewards, -1))


# ---------------------------------------------------------------------------------------------
# Learning.


def td_loss(params: Params, target_params: Params, batch: Episode, cfg: Config,
            mixer_apply: Callable[[Params, jax.Array, jax.Array], jax.Array]
            ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The masked squared TD error of Q_tot on a batch of episodes (see the module docstring)."""
  chex.assert_rank([batch.obs, batch.actions, batch.rewards], [4, 3, 2])
  resets = (jnp.concatenate([jnp.zeros_like(batch.dones[:, :1]), batch.dones], 1)
            if cfg.fragment_steps else None)  # a fragment's episodes each start from 0
  qs = episode_q_values(params["agent"], batch.obs, resets)  # [B, T+1, N, A]
  target_qs = episode_q_values(target_params["agent"], batch.obs, resets)
  taken = jnp.take_along_axis(qs[:, :-1], batch.actions[..., None], -1)[..., 0]  # [B, T, N]
  q_tot = mixer_apply(params["mixer"], taken, batch.state[:, :-1])  # [B, T]
  next_qs = double_q_next_values(qs[:, 1:], target_qs[:, 1:], batch.avail[:, 1:],
                                 double_q=cfg.double_q)
  next_q_tot = mixer_apply(target_params["mixer"], next_qs, batch.state[:, 1:])
  targets = jax.lax.stop_gradient(lambda_returns(cfg.reward_scale * batch.rewards, batch.dones,
                                                 next_q_tot, gamma=cfg.gamma,
                                                 td_lambda=cfg.td_lambda))
  chex.assert_equal_shape([q_tot, targets, batch.mask])
  mask = batch.mask if cfg.train_terminal else batch.mask * (1.0 - batch.dones)
  steps = jnp.maximum(mask.sum(), 1.0)
  error = (q_tot - targets) * mask
  metrics = {"q_taken": jnp.sum(q_tot * mask) / steps,
             "td_target": jnp.sum(targets * mask) / steps,
             "td_error": jnp.sum(jnp.abs(error)) / steps}
  return jnp.sum(error**2) / steps, metrics


@flax.struct.dataclass
class Runner:
  """Everything one seed's training carries from update to update."""

  params: Params
  target_params: Params
  opt_state: optax.OptState
  buffer: EpisodeBuffer
  key: jax.Array  # uint32[2] raw key data; update u uses fold_in(key, u)
  t_env: jax.Array  # int32[]: env transitions collected (inside episodes)
  updates: jax.Array  # int32[]
  skipped: jax.Array  # int32[]: gradient steps dropped for a non-finite loss or gradient


def init_runner(cfg: Config, env: Any, key: jax.Array) -> Runner:
  """A fresh runner: networks from `key`, an empty buffer, the target equal to the online net."""
  param_key, run_key = jax.random.split(key)
  params = init_params(param_key, cfg, env)
  example = jax.eval_shape(lambda: collect(cfg, env, params["agent"], jax.random.key(0), 1.0))
  example = jax.tree.map(lambda s: jnp.zeros(s.shape[1:], s.dtype), example)
  return Runner(params=params, target_params=params, opt_state=make_optimizer(cfg).init(params),
                buffer=buffer_init(cfg.buffer_size, example),
                key=jax.random.key_data(run_key), t_env=jnp.int32(0), updates=jnp.int32(0),
                skipped=jnp.int32(0))


def update_keys(runner: Runner) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Update u's randomness, `fold_in(runner.key, u)`: per-env episode keys and the learn key."""
  key = jax.random.fold_in(jax.random.wrap_key_data(runner.key), runner.updates)
  collect_key, learn_key = jax.random.split(key)
  return collect_key, learn_key


def current_epsilon(cfg: Config, runner: Runner) -> jax.Array:
  return epsilon_schedule(runner.t_env, cfg.epsilon_start, cfg.epsilon_finish,
                          cfg.epsilon_anneal_steps)


def learning_starts_at(cfg: Config, update: jax.Array | int, episodes_per_update: int
                       ) -> jax.Array:
  """Whether update `update` (0-based) learns: the buffer then holds min((update + 1) E,
  buffer_size) episodes, at least `learning_starts`. A function of the update's index alone, so
  it stays one value for every seed of a vmapped run."""
  stored = jnp.minimum((jnp.asarray(update) + 1) * episodes_per_update, cfg.buffer_size)
  return stored >= cfg.learning_starts


def episode_return(cfg: Config, episodes: Episode) -> jax.Array:
  """The mean return of an update's episodes; of fragments, their reward per episode ended."""
  if cfg.fragment_steps:
    return jnp.sum(episodes.rewards) / jnp.maximum(jnp.sum(episodes.dones), 1)
  return jnp.mean(jnp.sum(episodes.rewards, -1))


def make_learn(cfg: Config, env: Any
               ) -> Callable[[Runner, Episode, jax.Array, jax.Array],
                             tuple[Runner, dict[str, jax.Array]]]:
  """`learn(runner, episodes[E], key, update)`: store the episodes, take `epochs` gradient steps,
  each on its own sampled batch (once `learning_starts` episodes are stored), move the target
  network. A step with a non-finite loss or gradient is dropped and counted. `update` is the
  update's index (`runner.updates`), passed unbatched so that a vmapped run skips the gradient
  steps before learning starts (`lax.cond`; a predicate that differs across seeds would make
  vmap compute and discard them); their metrics are 0."""
  optimizer = make_optimizer(cfg)
  mixer = config_mixer(cfg, env)

  def learn(runner: Runner, episodes: Episode, key: jax.Array, update: jax.Array
            ) -> tuple[Runner, dict[str, jax.Array]]:
    buffer = buffer_add(runner.buffer, episodes)
    learning = buffer.size >= cfg.learning_starts

    def gradient_step(carry, step_key):
      params, opt_state, skipped = carry
      batch = buffer_sample(buffer, step_key, cfg.batch_size)
      (loss, metrics), grads = jax.value_and_grad(td_loss, has_aux=True)(
          params, runner.target_params, batch, cfg, mixer.apply)
      grad_norm = optax.tree.norm(grads)
      step, new_opt_state = optimizer.update(grads, opt_state, params)
      finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
      keep = lambda new, old: jnp.where(learning & finite, new, old)
      params = jax.tree.map(keep, optax.apply_updates(params, step), params)
      opt_state = jax.tree.map(keep, new_opt_state, opt_state)
      skipped = skipped + (learning & ~finite).astype(jnp.int32)
      return (params, opt_state, skipped), {**metrics, "loss": loss, "grad_norm": grad_norm}

    step_keys = key[None] if cfg.epochs == 1 else jax.random.split(key, cfg.epochs)
    carry = (runner.params, runner.opt_state, runner.skipped)
    steps = lambda c: jax.lax.scan(gradient_step, c, step_keys)
    idle = lambda c: (c, jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype),
                                      jax.eval_shape(steps, c)[1]))
    (params, opt_state, skipped), metrics = jax.lax.cond(
        learning_starts_at(cfg, update, episodes.rewards.shape[0]), steps, idle, carry)
    updates = runner.updates + 1
    target_params = update_target(runner.target_params, params, updates,
                                  interval=cfg.target_update_interval, tau=cfg.target_tau)
    t_env = runner.t_env + jnp.sum(episodes.mask).astype(jnp.int32)
    runner = Runner(params=params, target_params=target_params, opt_state=opt_state,
                    buffer=buffer, key=runner.key, t_env=t_env, updates=updates,
                    skipped=skipped)
    metrics = {**jax.tree.map(lambda m: jnp.mean(m, 0), metrics),
               "episode_return": episode_return(cfg, episodes),
               "learning": learning.astype(jnp.float32), "t_env": t_env}
    return runner, jax.tree.map(lambda m: jnp.asarray(m, jnp.float32), metrics)

  return learn


def make_update(cfg: Config, env: Any
                ) -> Callable[[Runner, jax.Array], tuple[Runner, dict[str, jax.Array]]]:
  """`update(runner, index) -> (runner, metrics)`: collect `num_envs` episodes, then `learn`;
  `index` is the update's index (`runner.updates`), unbatched (see `make_learn`)."""
  learn = make_learn(cfg, env)

  def update(runner: Runner, index: jax.Array) -> tuple[Runner, dict[str, jax.Array]]:
    collect_key, learn_key = update_keys(runner)
    epsilon = current_epsilon(cfg, runner)
    episodes = collect(cfg, env, runner.params["agent"], collect_key, epsilon)
    runner, metrics = learn(runner, episodes, learn_key, index)
    return runner, {**metrics, "epsilon": epsilon}

  return update


def make_train(cfg: Config, env: Any, num_updates: int
               ) -> Callable[[jax.Array], tuple[Runner, dict[str, jax.Array]]]:
  """`train(key) -> (final runner, metrics float32[num_updates] per name)`, jittable and vmappable.

  `jax.jit(jax.vmap(make_train(cfg, env, n)))(jax.random.split(key, seeds))` trains `seeds`
  independent runs at once.
  """
  update = make_update(cfg, env)

  def train(key: jax.Array) -> tuple[Runner, dict[str, jax.Array]]:
    runner = init_runner(cfg, env, key)
    return jax.lax.scan(update, runner, jnp.arange(num_updates))

  return train


def joint_q_table(cfg: Config, params: Params, obs: jax.Array, state: jax.Array
                  ) -> tuple[jax.Array, jax.Array]:
  """Per-agent Q float[N, A] and Q_tot float[A, ..., A] (one axis per agent) for every joint
  action, at a step with observations obs float[N, O] and global state float[S] and the
  agents' recurrent state at zero (as at an episode's first step; feed-forward agents have
  none)."""
  num_agents = obs.shape[0]
  qs, _ = agent_step(params["agent"], agent_inputs(obs), init_hidden(params["agent"],
                                                                      (num_agents,)))
  num_actions = qs.shape[-1]
  grids = jnp.meshgrid(*[jnp.arange(num_actions)] * num_agents, indexing="ij")
  joint = jnp.stack([g.reshape(-1) for g in grids], -1)  # [A^N, N]
  taken = qs[jnp.arange(num_agents)[None, :], joint]  # [A^N, N]
  mixer = make_mixer(cfg.mixer, num_agents, state.shape[-1], embed_dim=cfg.mixer_embed_dim,
                     hypernet_hidden=cfg.hypernet_hidden)
  states = jnp.broadcast_to(state, (joint.shape[0], state.shape[-1]))
  return qs, mixer.apply(params["mixer"], taken, states).reshape((num_actions,) * num_agents)
