"""Decoder building blocks against formulas written out in numpy."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from marft.models.config import NAMED_CONFIGS, get_model_config
from marft.models.decoder import Decoder, RMSNorm, apply_rope, build_model, rope_inverse_frequencies
from marft.models.heads import ValueHead


def test_rms_norm_matches_numpy():
  x = np.random.default_rng(0).normal(size=(2, 3, 8)).astype(np.float32)
  norm = RMSNorm(8, 1e-6, jnp.float32, "embed")
  norm.weight[...] = jnp.arange(1.0, 9.0)
  expected = np.arange(1.0, 9.0) * x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(norm(jnp.asarray(x)), expected, rtol=1e-5)


def test_rope_rotates_pairs_by_position_times_frequency():
  config = get_model_config("tiny", head_dim=8, rope_theta=100.0)
  inv_freq = rope_inverse_frequencies(config)
  np.testing.assert_allclose(inv_freq, 100.0 ** (-np.arange(0, 8, 2) / 8), rtol=1e-6)
  x = np.random.default_rng(1).normal(size=(1, 3, 1, 8)).astype(np.float32)
  positions = np.array([[0, 1, 5]])
  got = np.asarray(apply_rope(jnp.asarray(x), jnp.asarray(positions), inv_freq))
  for t, p in enumerate(positions[0]):
    for i, w in enumerate(inv_freq):  # dims (i, i + 4) rotate by angle p * w
      c, s = math.cos(p * w), math.sin(p * w)
      a, b = x[0, t, 0, i], x[0, t, 0, i + 4]
      np.testing.assert_allclose(got[0, t, 0, [i, i + 4]], [a * c - b * s, b * c + a * s],
                                 rtol=1e-5, atol=1e-6)


def test_llama3_rope_scaling_bands():
  scaling = (("factor", 8.0), ("high_freq_factor", 4.0), ("low_freq_factor", 1.0),
             ("original_max_position_embeddings", 64), ("rope_type", "llama3"))
  base = get_model_config("tiny", head_dim=16, rope_theta=10000.0)
  plain = rope_inverse_frequencies(base)
  scaled = rope_inverse_frequencies(base.replace(rope_scaling=scaling))
  wavelen = 2 * np.pi / plain
  high = wavelen < 64 / 4  # short wavelengths are kept
  low = wavelen > 64 / 1  # long wavelengths are divided by the factor
  np.testing.assert_allclose(scaled[high], plain[high], rtol=1e-6)
  np.testing.assert_allclose(scaled[low], plain[low] / 8.0, rtol=1e-6)
  mid = ~high & ~low
  smooth = (64 / wavelen[mid] - 1.0) / (4.0 - 1.0)
  np.testing.assert_allclose(scaled[mid], (1 - smooth) * plain[mid] / 8 + smooth * plain[mid],
                             rtol=1e-6)


def test_named_configs_match_public_parameter_counts():
  # Counts published for the Hugging Face checkpoints (tied embeddings counted once).
  assert NAMED_CONFIGS["qwen2.5-0.5b"].num_params() == 494_032_768
  assert NAMED_CONFIGS["qwen2.5-1.5b"].num_params() == 1_543_714_304
  assert NAMED_CONFIGS["llama3.2-1b"].num_params() == 1_235_814_400
  for name in ("tiny", "small", "qwen3-1.7b"):
    config = NAMED_CONFIGS[name]
    abstract = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))
    counted = sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    assert counted == config.num_params()
  assert 0.8e6 < NAMED_CONFIGS["tiny"].num_params() < 1.3e6
  assert 8e6 < NAMED_CONFIGS["small"].num_params() < 13e6


def test_every_parameter_has_logical_axes_of_its_rank():
  config = get_model_config("tiny", qkv_bias=True, qk_norm=True, lora_rank=2)
  model = build_model(config)
  known = {"vocab", "embed", "mlp", "heads", "kv_heads", "head_dim", None}
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    axes = var.get_metadata()["logical_axes"]
    assert len(axes) == var[...].ndim, path
    assert set(axes) <= known, path


def test_fresh_lora_is_identity_and_its_delta_is_scaled_low_rank_product():
  config = get_model_config("tiny", num_layers=1, lora_rank=4, lora_alpha=8.0,
                            lora_targets=("q_proj", "up_proj"))
  with_lora = build_model(config, seed=0)
  without = build_model(config.replace(lora_rank=0), seed=0)
  nnx.update(without, nnx.state(with_lora, nnx.Not(nnx.LoRAParam)))
  tokens = jnp.asarray([[3, 17, 40, 41, 99]])
  np.testing.assert_allclose(with_lora(tokens), without(tokens), atol=1e-6)
  proj = with_lora.layers[0].mlp.up_proj
  assert with_lora.layers[0].mlp.gate_proj.lora_a is None
  proj.lora_b[...] = jax.random.normal(jax.random.key(1), proj.lora_b[...].shape)
  x = np.random.default_rng(2).normal(size=(3, config.hidden_size)).astype(np.float32)
  a, b, w = (np.asarray(v[...]) for v in (proj.lora_a, proj.lora_b, proj.kernel))
  np.testing.assert_allclose(proj(jnp.asarray(x)), x @ w + (8.0 / 4) * (x @ a) @ b,
                             rtol=1e-4, atol=1e-5)


def test_bfloat16_option_keeps_float32_logits_close_to_float32():
  config = get_model_config("tiny")
  f32 = build_model(config, seed=0)
  bf16 = build_model(config.replace(dtype="bfloat16", param_dtype="bfloat16"), seed=0)
  assert bf16.layers[0].attn.q_proj.kernel[...].dtype == jnp.bfloat16
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 128, (2, 20)), jnp.int32)
  logits = bf16(tokens)
  assert logits.dtype == jnp.float32
  np.testing.assert_allclose(logits, f32(tokens), atol=0.05)


def test_value_head_is_mlp_on_hidden_states():
  head = ValueHead(8, (16,), rngs=nnx.Rngs(0))
  hidden = np.random.default_rng(0).normal(size=(2, 5, 8)).astype(np.float32)
  np.testing.assert_array_equal(head(jnp.asarray(hidden)), np.zeros((2, 5)))  # zero-init output
  head.out.kernel[...] = jnp.ones((16, 1))
  w1, b1 = np.asarray(head.hidden[0].kernel[...]), np.asarray(head.hidden[0].bias[...])
  expected = np.maximum(hidden @ w1 + b1, 0).sum(-1)
  np.testing.assert_allclose(head(jnp.asarray(hidden)), expected, rtol=1e-5)


def test_config_errors_are_clear():
  with pytest.raises(ValueError, match="unknown model"):
    get_model_config("gpt5")
  with pytest.raises(ValueError, match="multiple"):
    get_model_config("tiny", num_kv_heads=3)
  with pytest.raises(ValueError, match="lora_targets"):
    get_model_config("tiny", lora_targets=("qproj",))


def _logprob_objective(tokens, weights):
  from marft.logprobs import next_token_logprobs

  def objective(model):
    logp = next_token_logprobs(model, tokens)
    return (logp * weights).sum(), logp
  return objective


def _value_and_grad(config, tokens, weights):
  model = build_model(config, seed=3)
  (value, logp), grads = nnx.value_and_grad(_logprob_objective(tokens, weights),
                                            has_aux=True)(model)
  return value, logp, jax.tree.leaves(nnx.state(grads, nnx.Param))


@pytest.mark.parametrize("tie", [False, True])
def test_chunked_logprobs_equal_the_full_projection_and_its_gradient(tie):
  config = get_model_config("tiny", num_layers=1, tie_embeddings=tie, vocab_size=160)
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(0, config.vocab_size, (3, 12)), jnp.int32)
  weights = jnp.asarray(rng.normal(size=(3, 11)), jnp.float32)
  model = build_model(config, seed=3)
  # numpy log-softmax of the full logits (jitted: eager decoder ops compile one by one)
  logits = np.asarray(nnx.jit(lambda m, x: m(x))(model, tokens[:, :-1]), np.float64)
  log_softmax = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1,
                                keepdims=True)) - logits.max(-1, keepdims=True)
  numpy_logp = np.take_along_axis(log_softmax, np.asarray(tokens[:, 1:])[..., None], -1)[..., 0]
  want_value, want_logp, want_grads = _value_and_grad(config, tokens, weights)
  np.testing.assert_allclose(want_logp, numpy_logp, rtol=1e-5, atol=1e-5)
  for chunk in (4, 5, 11, 16):  # 11 positions: padded chunks, one chunk, one larger chunk
    value, logp, grads = _value_and_grad(config.replace(logprob_chunk=chunk), tokens, weights)
    np.testing.assert_allclose(logp, numpy_logp, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(value, want_value, rtol=1e-6)
    assert len(grads) == len(want_grads)
    for got, want in zip(grads, want_grads):  # float32 sums in another order
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
  # No [B, T, V] array anywhere in the backward pass with chunks of 4 (there is one without).
  def backward_text(model):
    graphdef, state = nnx.split(model)
    objective = lambda s: _logprob_objective(tokens, weights)(nnx.merge(graphdef, s))[0]
    return str(jax.make_jaxpr(jax.grad(objective))(state))
  full_logits = f"f32[3,11,{config.vocab_size}]"
  assert full_logits in backward_text(build_model(config))
  assert full_logits not in backward_text(build_model(config.replace(logprob_chunk=4)))


@pytest.mark.parametrize("remat", ["block", "dots"])
def test_remat_keeps_outputs_and_gradients(remat):
  config = get_model_config("tiny", num_layers=2)
  rng = np.random.default_rng(1)
  tokens = jnp.asarray(rng.integers(0, config.vocab_size, (2, 9)), jnp.int32)
  weights = jnp.asarray(rng.normal(size=(2, 8)), jnp.float32)
  want_value, want_logp, want_grads = _value_and_grad(config, tokens, weights)
  value, logp, grads = _value_and_grad(config.replace(remat=remat), tokens, weights)
  np.testing.assert_allclose(logp, want_logp, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(value, want_value, rtol=1e-6)
  for got, want in zip(grads, want_grads):  # recomputation reassociates a few float sums
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=5e-6)
  model = build_model(config.replace(remat=remat), seed=3)
  graphdef, state = nnx.split(model)
  text = str(jax.make_jaxpr(lambda s: nnx.merge(graphdef, s)(tokens))(state))
  assert text.count("checkpoint") + text.count("remat") >= config.num_layers


def test_bad_memory_options_are_rejected():
  with pytest.raises(ValueError, match="remat='layer'"):
    get_model_config("tiny", remat="layer")
  with pytest.raises(ValueError, match="logprob_chunk=-1"):
    get_model_config("tiny", logprob_chunk=-1)
