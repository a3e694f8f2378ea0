"""A generated corpus of addition problems `a+b=c` for supervised language-model jobs.

Problems are split by a fixed hash of `(a, b)`: every tenth pair is held out for evaluation and
never appears in training batches. Batches are a pure function of `(seed, step)`.
"""
from __future__ import annotations

import numpy as np

from marft.tokenizers import CharTokenizer


def is_held_out(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """The evaluation split: one pair in ten, by a multiplicative hash (no pattern in a, b or a+b)."""
  key = np.asarray(a, np.int64) * 1031 + np.asarray(b, np.int64)
  return ((key * 2654435761) % 2**32) // 2**16 % 10 == 0


def sample_pairs(rng: np.random.Generator, count: int, max_operand: int, held_out: bool
                 ) -> tuple[np.ndarray, np.ndarray]:
  """`count` operand pairs in `[0, max_operand]` from the requested split."""
  a_out, b_out = [], []
  need = count
  while need > 0:
    a = rng.integers(0, max_operand + 1, 4 * need + 8)
    b = rng.integers(0, max_operand + 1, 4 * need + 8)
    keep = is_held_out(a, b) == held_out
    a_out.append(a[keep][:need])
    b_out.append(b[keep][:need])
    need -= len(a_out[-1])
  return np.concatenate(a_out), np.concatenate(b_out)


def max_sequence_length(max_operand: int) -> int:
  digits = len(str(max_operand))
  return 1 + (2 * digits + 2) + (digits + 1) + 1  # bos, "a+b=", answer, eos


def encode_problems(tokenizer: CharTokenizer, a: np.ndarray, b: np.ndarray, length: int
                    ) -> dict[str, np.ndarray]:
  """Right-padded `[bos] a+b=c [eos]` rows; `loss_mask` covers every real token."""
  tokens = np.full((len(a), length), tokenizer.pad_id, np.int32)
  mask = np.zeros((len(a), length), np.float32)
  for row, (x, y) in enumerate(zip(a, b)):
    ids = [tokenizer.bos_id] + tokenizer.encode(f"{x}+{y}={x + y}") + [tokenizer.eos_id]
    tokens[row, :len(ids)] = ids
    mask[row, :len(ids)] = 1.0
  return {"tokens": tokens, "loss_mask": mask}


def train_batch(tokenizer: CharTokenizer, seed: int, step: int, batch_size: int,
                max_operand: int) -> dict[str, np.ndarray]:
  """The training batch for `step` (deterministic in `(seed, step)`)."""
  rng = np.random.default_rng([seed, step])
  a, b = sample_pairs(rng, batch_size, max_operand, held_out=False)
  return encode_problems(tokenizer, a, b, max_sequence_length(max_operand))


def eval_prompts(tokenizer: CharTokenizer, seed: int, count: int, max_operand: int
                 ) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """Held-out prompts `[bos] a+b=` (right-padded), their lengths and the exact answers."""
  a, b = sample_pairs(np.random.default_rng([seed, 10**9]), count, max_operand, held_out=True)
  width = max_sequence_length(max_operand)
  prompts = np.full((count, width), tokenizer.pad_id, np.int32)
  lengths = np.zeros((count,), np.int32)
  for row, (x, y) in enumerate(zip(a, b)):
    ids = [tokenizer.bos_id] + tokenizer.encode(f"{x}+{y}=")
    prompts[row, :len(ids)] = ids
    lengths[row] = len(ids)
  return prompts, lengths, [str(x + y) for x, y in zip(a, b)]
