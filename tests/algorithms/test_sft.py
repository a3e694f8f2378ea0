"""The supervised loss against a cross-entropy written out in numpy."""
import jax.numpy as jnp
import numpy as np
from flax import nnx

from algorithms import sft
from marft.models.config import get_model_config
from marft.models.decoder import build_model


def test_sft_loss_is_the_numpy_cross_entropy_of_the_masked_targets():
  model = build_model(get_model_config("tiny", num_layers=1), seed=4)
  # Peaked logits (x10 through the final norm) so that each position's NLL differs clearly.
  model.final_norm.weight[...] = model.final_norm.weight[...] * 10.0
  rng = np.random.default_rng(0)
  tokens = rng.integers(4, 120, (3, 14)).astype(np.int32)
  mask = np.zeros((3, 14), np.float32)
  mask[0, 6:10] = 1.0   # a response
  mask[1, 0:3] = 1.0    # position 0 has no prediction: only tokens 1 and 2 are targets
  mask[1, 9] = 1.0
  mask[2, [4, 7, 13]] = 1.0
  sft_loss = nnx.jit(sft.loss)  # one compilation, not one per eager op
  loss, metrics = sft_loss(model, {"tokens": jnp.asarray(tokens), "loss_mask": jnp.asarray(mask)})

  # Target x_t (t >= 1, mask_t = 1) is scored by the logits at position t - 1.
  logits = np.asarray(nnx.jit(lambda m, x: m(x))(model, jnp.asarray(tokens)), np.float64)
  logits -= logits.max(-1, keepdims=True)
  log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  nll = [-log_softmax[b, t - 1, tokens[b, t]] for b in range(3) for t in range(1, 14) if mask[b, t]]
  assert len(nll) == 10 and np.std(nll) > 1.0
  np.testing.assert_allclose(loss, np.mean(nll), rtol=1e-5)
  assert float(metrics["tokens"]) == 10
  # An empty mask gives 0, not NaN.
  empty, _ = sft_loss(model, {"tokens": jnp.asarray(tokens), "loss_mask": jnp.zeros((3, 14))})
  assert float(empty) == 0.0
