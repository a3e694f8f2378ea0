"""Bad checkpoints give one clear CheckpointError, never a deep traceback."""
import json

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from marft.models import hf
from marft.models.config import get_model_config
from marft.models.decoder import build_model

CONFIG = get_model_config("tiny", num_layers=1, vocab_size=112, qkv_bias=True,
                          model_type="qwen2")


@pytest.fixture
def checkpoint(tmp_path):
  model = build_model(CONFIG, seed=0)
  hf.save_pretrained(model, CONFIG, str(tmp_path))
  return tmp_path, model


def test_round_trip_is_exact(checkpoint):
  path, model = checkpoint
  loaded, config = hf.load_pretrained(str(path))
  assert config == CONFIG
  tokens = jnp.asarray([[1, 5, 9, 33]])
  np.testing.assert_array_equal(loaded(tokens), model(tokens))


def test_truncated_file(checkpoint):
  path, _ = checkpoint
  file = path / "model.safetensors"
  file.write_bytes(file.read_bytes()[:1000])
  with pytest.raises(hf.CheckpointError, match="cannot read"):
    hf.load_pretrained(str(path))


def test_missing_unexpected_and_misshapen_tensors(checkpoint):
  path, _ = checkpoint
  tensors = load_file(path / "model.safetensors")
  name = "model.layers.0.mlp.up_proj.weight"
  save_file({k: v for k, v in tensors.items() if k != name}, path / "model.safetensors")
  with pytest.raises(hf.CheckpointError, match="missing"):
    hf.load_pretrained(str(path))
  save_file({**tensors, "model.layers.7.extra": np.zeros(3, np.float32)},
            path / "model.safetensors")
  with pytest.raises(hf.CheckpointError, match="unexpected"):
    hf.load_pretrained(str(path))
  save_file({**tensors, name: tensors[name][:, :-1]}, path / "model.safetensors")
  with pytest.raises(hf.CheckpointError, match="shape"):
    hf.load_pretrained(str(path))


def test_unsupported_family_and_missing_files(checkpoint, tmp_path_factory):
  path, _ = checkpoint
  config = json.loads((path / "config.json").read_text())
  (path / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
  with pytest.raises(hf.CheckpointError, match="gpt2"):
    hf.load_pretrained(str(path))
  empty = tmp_path_factory.mktemp("empty")
  with pytest.raises(hf.CheckpointError, match="config.json"):
    hf.load_pretrained(str(empty))
  (empty / "config.json").write_text(json.dumps(config))
  with pytest.raises(hf.CheckpointError, match="safetensors"):
    hf.load_pretrained(str(empty))
