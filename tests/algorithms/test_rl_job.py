"""Pieces of the AT-GRPO job: per-policy batches and the policy loss on a real model."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from experiments import rl
from marft.logprobs import next_token_logprobs
from marft.models.config import get_model_config
from marft.models.decoder import build_model


def test_policy_batches_route_rows_and_pad_with_zero_weight():
  rows = {"x": np.arange(5, dtype=np.float32), "row_weight": np.ones(5, np.float32)}
  out = rl._policy_batches(rows, np.array([1, 0, 1, 1, 0]), num_policies=2)
  assert out["x"].shape == (2, 64)
  np.testing.assert_array_equal(out["x"][0, :2], [1, 4])
  np.testing.assert_array_equal(out["x"][1, :3], [0, 2, 3])
  np.testing.assert_array_equal(out["row_weight"].sum(-1), [2, 3])  # padding carries no weight
  big = rl._policy_batches({"x": np.zeros(70)}, np.zeros(70, int), 1)
  assert big["x"].shape == (1, 128)


def test_on_policy_loss_is_minus_token_mean_advantage_and_its_gradient_is_reinforce():
  model = build_model(get_model_config("tiny", num_layers=1))
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(4, 100, (3, 10)), jnp.int32)
  mask = np.zeros((3, 10), np.float32)
  mask[:, 6:9] = 1.0
  logp = np.asarray(next_token_logprobs(model, tokens))
  behavior = np.zeros((3, 10), np.float32)
  behavior[:, 1:] = logp  # on-policy: the ratio is exactly 1
  advantages = np.array([1.0, -0.5, 2.0], np.float32)
  batch = {"tokens": tokens, "loss_mask": jnp.asarray(mask), "behavior_logp": jnp.asarray(behavior),
           "advantages": jnp.asarray(advantages), "row_weight": jnp.ones(3)}
  cfg = ml_collections.ConfigDict(dict(clip_eps=0.2, dual_clip=3.0, aggregation="token-mean",
                                       kl_coef=0.0))
  loss, metrics = rl.loss(model, batch, cfg)
  np.testing.assert_allclose(loss, -(advantages[:, None] * mask[:, 1:]).sum() / mask.sum(),
                             rtol=1e-5)
  assert float(metrics["clip_frac"]) == 0.0 and abs(float(metrics["approx_kl"])) < 1e-6
  # At ratio 1 the gradient equals that of -sum(A * logp * m) / sum(m) (REINFORCE).
  graphdef, state = nnx.split(model)
  grad = jax.grad(lambda s: rl.loss(nnx.merge(graphdef, s), batch, cfg)[0])(state)
  reinforce = jax.grad(lambda s: -(jnp.asarray(advantages)[:, None] * next_token_logprobs(
      nnx.merge(graphdef, s), tokens) * mask[:, 1:]).sum() / mask.sum())(state)
  for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(reinforce)):
    np.testing.assert_allclose(a, b, atol=1e-6)
