"""Scalar heads on decoder hidden states: values for critics, scores for process reward models."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from marft.sampling import shape_bucket


class ValueHead(nnx.Module):
  """`v = w_out . relu(... relu(W_1 h + b_1) ...) + b_out`: one float32 scalar per position.

  `hidden_dims=()` is a linear head; MARFT's critic uses `(1024, 512)` at real scale. The output
  layer starts at zero so a fresh head predicts 0 everywhere.
  """

  def __init__(self, input_dim: int, hidden_dims: Sequence[int] = (), *, rngs: nnx.Rngs):
    dims = [input_dim, *hidden_dims]
    self.hidden = nnx.List([
        nnx.Linear(d_in, d_out, param_dtype=jnp.float32, rngs=rngs)
        for d_in, d_out in zip(dims[:-1], dims[1:])])
    self.out = nnx.Linear(dims[-1], 1, kernel_init=nnx.initializers.zeros, rngs=rngs)

  def __call__(self, hidden: jax.Array) -> jax.Array:
    """`hidden: [..., D]` -> `float32[...]`."""
    x = hidden.astype(jnp.float32)
    for layer in self.hidden:
      x = jax.nn.relu(layer(x))
    return self.out(x)[..., 0]


class ScoredLM(nnx.Module):
  """A decoder with a `ValueHead` on its final hidden states: one logit per position (a
  verifier, an outcome or process reward model). `__call__(tokens: int32[B, T]) ->
  float32[B, T]`."""

  def __init__(self, trunk: nnx.Module, hidden_dims: Sequence[int] = (), *, rngs: nnx.Rngs):
    self.trunk = trunk
    self.hidden_dims = tuple(int(d) for d in hidden_dims)
    self.head = ValueHead(trunk.config.hidden_size, self.hidden_dims, rngs=rngs)

  def __call__(self, tokens: jax.Array) -> jax.Array:
    hidden, _ = self.trunk.hidden_states(tokens)
    return self.head(hidden)


def make_scorer(model: ScoredLM, pad_id: int, link: Callable[[jax.Array], jax.Array] =
                jax.nn.sigmoid) -> Callable[[Sequence[Sequence[int]]], np.ndarray]:
  """The rollout engine's scorer: `link` of each token list's last-token logit (a verifier's
  sigmoid; a MASPRM's tanh), in one padded call."""
  score = nnx.jit(lambda m, tokens, last: link(
      jnp.take_along_axis(m(tokens), last[:, None], axis=1)[:, 0]))

  def scorer(sequences: Sequence[Sequence[int]]) -> np.ndarray:
    n, width = len(sequences), shape_bucket(max(len(s) for s in sequences))
    tokens = np.full((shape_bucket(n, 16), width), pad_id, np.int32)
    last = np.zeros(len(tokens), np.int32)
    for i, s in enumerate(sequences):
      tokens[i, :len(s)] = s
      last[i] = len(s) - 1
    return np.asarray(score(model, jnp.asarray(tokens), jnp.asarray(last)))[:n]

  return scorer
