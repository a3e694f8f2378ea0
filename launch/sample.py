"""Sample from a model: a named shape (random weights) or a Hugging Face checkpoint directory.

  python -m launch.sample                                  # tiny model, character tokenizer
  python -m launch.sample --checkpoint=/path/to/qwen2.5-0.5b --prompt="What is 7*6?"

Prints each completion and the generation speed.
"""
from __future__ import annotations

import time

import jax
import numpy as np
from absl import app, flags

from marft.models.config import get_model_config
from marft.models.decoder import build_model
from marft.models.hf import load_pretrained
from marft.sampling import generate
from marft.tokenizers import load_tokenizer

_MODEL = flags.DEFINE_string("model", "tiny", "Named model shape (random weights).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "HF checkpoint directory (overrides --model).")
_PROMPT = flags.DEFINE_string("prompt", "Plan a path from S to G.", "User message.")
_BATCH = flags.DEFINE_integer("batch", 4, "Completions to sample.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 32, "Tokens per completion.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "0 is greedy.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")


def main(argv: list[str]) -> None:
  del argv
  if _CHECKPOINT.value:
    model, config = load_pretrained(_CHECKPOINT.value)
    tokenizer = load_tokenizer(_CHECKPOINT.value)
  else:
    config = get_model_config(_MODEL.value)
    model = build_model(config, seed=_SEED.value)
    tokenizer = load_tokenizer("char", config.vocab_size)
  prompt = tokenizer.chat([{"role": "user", "content": _PROMPT.value}])
  prompts = np.tile(np.asarray(prompt, np.int32), (_BATCH.value, 1))
  lengths = np.full((_BATCH.value,), len(prompt), np.int32)
  kwargs = dict(max_new_tokens=_MAX_NEW.value, temperature=_TEMPERATURE.value,
                stop_ids=tokenizer.stop_ids, pad_id=tokenizer.pad_id)
  key = jax.random.key(_SEED.value)
  start = time.perf_counter()
  jax.block_until_ready(generate(model, prompts, lengths, key, **kwargs))
  compiled = time.perf_counter() - start
  start = time.perf_counter()
  out = jax.block_until_ready(generate(model, prompts, lengths, key, **kwargs))
  seconds = time.perf_counter() - start
  for tokens, length in zip(np.asarray(out.tokens), np.asarray(out.lengths)):
    print(repr(tokenizer.decode(tokens[:length])))
  generated = int(np.asarray(out.lengths).sum())
  print(f"{config.num_params() / 1e6:.1f}M params on {jax.devices()[0].platform}: "
        f"{generated} tokens in {seconds * 1e3:.0f} ms ({generated / seconds:.0f} tok/s); "
        f"first call with compilation {compiled:.1f} s")


if __name__ == "__main__":
  app.run(main)
