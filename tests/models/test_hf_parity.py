"""Parity with the reference implementation (transformers, torch CPU), both directions.

Random tiny configs of each supported family are built in transformers, saved as HF
checkpoints, loaded by marft, and compared logit by logit; then marft saves and transformers
loads. Tolerance: max abs error < 1e-4 in float32.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from marft.models import hf  # noqa: E402
from marft.models.decoder import init_cache  # noqa: E402

TOL = 1e-4

COMMON = dict(vocab_size=97, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
              rms_norm_eps=1e-6)


def _reference(family: str, tied: bool):
  torch.manual_seed(0)
  if family == "qwen2":
    config = transformers.Qwen2Config(**COMMON, tie_word_embeddings=tied, rope_theta=10000.0)
    model = transformers.Qwen2ForCausalLM(config)
  elif family == "qwen3":
    config = transformers.Qwen3Config(**COMMON, head_dim=24, tie_word_embeddings=tied,
                                      rope_theta=1e6)
    model = transformers.Qwen3ForCausalLM(config)
  else:
    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64}
    config = transformers.LlamaConfig(**COMMON, tie_word_embeddings=tied,
                                      rope_parameters=rope)
    model = transformers.LlamaForCausalLM(config)
  # Random (non-unit) norm weights and biases so that every tensor's mapping is exercised.
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name or name.endswith("bias"):
        p.copy_(torch.randn_like(p) * 0.5 + (1.0 if "norm" in name else 0.0))
  return model.eval().float()


def _torch_logits(model, tokens: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.tensor(tokens, dtype=torch.long)).logits.float().numpy()


FAMILIES = [("qwen2", True), ("qwen2", False), ("qwen3", True), ("llama", False)]


@pytest.mark.parametrize("family,tied", FAMILIES)
def test_loaded_logits_match_reference(tmp_path, family, tied):
  reference = _reference(family, tied)
  reference.save_pretrained(tmp_path)
  model, config = hf.load_pretrained(str(tmp_path))
  assert config.model_type == family and config.tie_embeddings == tied
  tokens = np.random.default_rng(1).integers(0, COMMON["vocab_size"], (3, 40))
  expected = _torch_logits(reference, tokens)
  got = np.asarray(model(jnp.asarray(tokens, jnp.int32)))
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, expected, atol=TOL, rtol=0)

  # Token-by-token decoding through the KV cache reproduces the reference full forward.
  cache = init_cache(config, tokens.shape[0], tokens.shape[1])
  steps = []
  for t in range(tokens.shape[1]):
    positions = jnp.full((tokens.shape[0], 1), t, jnp.int32)
    logits, cache = model.decode(jnp.asarray(tokens[:, t:t + 1], jnp.int32), positions, cache,
                                 jnp.int32(t))
    steps.append(np.asarray(logits))
  np.testing.assert_allclose(np.concatenate(steps, axis=1), expected, atol=TOL, rtol=0)


@pytest.mark.parametrize("family,tied", FAMILIES)
def test_saved_checkpoint_loads_in_transformers(tmp_path, family, tied):
  reference = _reference(family, tied)
  reference.save_pretrained(tmp_path / "ref")
  model, config = hf.load_pretrained(str(tmp_path / "ref"))
  # Perturb marft's weights so the round trip cannot pass by returning the original files.
  model.final_norm.weight[...] = model.final_norm.weight[...] * 1.5
  hf.save_pretrained(model, config, str(tmp_path / "ours"))
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours").eval().float()
  tokens = np.random.default_rng(2).integers(0, COMMON["vocab_size"], (2, 33))
  np.testing.assert_allclose(_torch_logits(reloaded, tokens),
                             np.asarray(model(jnp.asarray(tokens, jnp.int32))), atol=TOL, rtol=0)


def test_lora_adapters_are_merged_on_save(tmp_path):
  reference = _reference("qwen2", True)
  reference.save_pretrained(tmp_path / "ref")
  model, config = hf.load_pretrained(str(tmp_path / "ref"), lora_rank=4, lora_alpha=8.0)
  tokens = np.random.default_rng(3).integers(0, COMMON["vocab_size"], (2, 17))
  base = np.asarray(model(jnp.asarray(tokens, jnp.int32)))
  np.testing.assert_allclose(base, _torch_logits(reference, tokens), atol=TOL, rtol=0)
  key = jax.random.key(0)
  for layer in model.layers:
    for proj in (layer.attn.q_proj, layer.attn.v_proj, layer.mlp.down_proj):
      key, sub = jax.random.split(key)
      proj.lora_b[...] = 0.05 * jax.random.normal(sub, proj.lora_b[...].shape)
  adapted = np.asarray(model(jnp.asarray(tokens, jnp.int32)))
  assert np.abs(adapted - base).max() > 1e-2
  hf.save_pretrained(model, config, str(tmp_path / "merged"))
  merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval().float()
  np.testing.assert_allclose(_torch_logits(merged, tokens), adapted, atol=TOL, rtol=0)


def test_sharded_index_and_bfloat16_round_trip(tmp_path):
  reference = _reference("qwen2", False)
  reference.save_pretrained(tmp_path / "ref", max_shard_size="60KB")
  assert os.path.exists(tmp_path / "ref" / "model.safetensors.index.json")
  model, config = hf.load_pretrained(str(tmp_path / "ref"))
  tokens = np.random.default_rng(4).integers(0, COMMON["vocab_size"], (2, 9))
  np.testing.assert_allclose(np.asarray(model(jnp.asarray(tokens, jnp.int32))),
                             _torch_logits(reference, tokens), atol=TOL, rtol=0)

  bf16 = config.replace(param_dtype="bfloat16", dtype="bfloat16")
  hf.save_pretrained(model, bf16, str(tmp_path / "bf16"), max_shard_bytes=40_000)
  with open(tmp_path / "bf16" / "model.safetensors.index.json") as f:
    assert len(set(json.load(f)["weight_map"].values())) > 1
  model16, config16 = hf.load_pretrained(str(tmp_path / "bf16"))
  assert config16.param_dtype == "bfloat16"
  assert model16.embed[...].dtype == jnp.bfloat16
  ref16 = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "bf16",
                                                            dtype=torch.float32).eval()
  # bfloat16 weights, float32 compute on both sides: the same numbers.
  model32, _ = hf.load_pretrained(str(tmp_path / "bf16"), dtype="float32", param_dtype="float32")
  np.testing.assert_allclose(np.asarray(model32(jnp.asarray(tokens, jnp.int32))),
                             _torch_logits(ref16, tokens), atol=TOL, rtol=0)
  # bfloat16 compute stays close to it, and logits are float32.
  logits16 = model16(jnp.asarray(tokens, jnp.int32))
  assert logits16.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(logits16), _torch_logits(ref16, tokens), atol=0.1)


def test_transformers4_config_keys(tmp_path):
  reference = _reference("llama", False)
  reference.save_pretrained(tmp_path)
  with open(tmp_path / "config.json") as f:
    config = json.load(f)
  rope = config.pop("rope_parameters")
  config["rope_theta"] = rope.pop("rope_theta")
  config["rope_scaling"] = {"type" if k == "rope_type" else k: v for k, v in rope.items()}
  config["torch_dtype"] = config.pop("dtype", "float32")
  with open(tmp_path / "config.json", "w") as f:
    json.dump(config, f)
  model, loaded = hf.load_pretrained(str(tmp_path))
  assert dict(loaded.rope_scaling)["rope_type"] == "llama3"
  tokens = np.random.default_rng(5).integers(0, COMMON["vocab_size"], (1, 80))
  np.testing.assert_allclose(np.asarray(model(jnp.asarray(tokens, jnp.int32))),
                             _torch_logits(reference, tokens), atol=TOL, rtol=0)


def test_fused_projections_match_reference_forward_and_backward(tmp_path):
  """At >= 256 rows the QKV and gate/up projections run as one concatenated matmul
  (`decoder.fused_linear`); Qwen2 has QKV bias, so the fused bias path is exercised too.
  Logits and the gradient of a scalar loss w.r.t. every parameter match torch autograd."""
  from flax import nnx
  from marft.models import decoder
  reference = _reference("qwen2", False)
  reference.save_pretrained(tmp_path)
  model, config = hf.load_pretrained(str(tmp_path))
  assert config.qkv_bias
  tokens = np.random.default_rng(6).integers(0, COMMON["vocab_size"], (4, 128))
  assert tokens.size >= 2 * decoder._FUSE_MIN_ROWS
  # A fixed random cotangent: loss = sum(logits * G) reaches every logit with its own weight.
  cotangent = np.random.default_rng(7).normal(
      size=tokens.shape + (COMMON["vocab_size"],)).astype(np.float32) / np.sqrt(tokens.size)

  reference.zero_grad()
  logits_t = reference(torch.tensor(tokens, dtype=torch.long)).logits
  (logits_t * torch.tensor(cotangent)).sum().backward()
  expected_grads = {name: p.grad.numpy() for name, p in reference.named_parameters()}

  graphdef, state = nnx.split(model)

  def loss(s):
    logits = nnx.merge(graphdef, s)(jnp.asarray(tokens, jnp.int32))
    return (logits * cotangent).sum(), logits

  (_, logits), grads = jax.value_and_grad(loss, has_aux=True)(state)
  np.testing.assert_allclose(np.asarray(logits), logits_t.detach().numpy(), atol=TOL, rtol=0)
  grads = nnx.to_pure_dict(grads)
  table = hf.parameter_table(config)
  assert sum(name.endswith("bias") for name, _, _ in table) == 3 * COMMON["num_hidden_layers"]
  for name, path, transpose in table:
    got = grads
    for key in path:
      got = got[key]
    got = np.asarray(got).T if transpose else np.asarray(got)
    want = expected_grads[name]
    scale = np.abs(want).max()
    assert scale > 0, name
    np.testing.assert_allclose(got, want, atol=1e-4 * scale + 1e-6, rtol=0, err_msg=name)
