"""The generated addition corpus: exact answers, disjoint splits, determinism."""
import numpy as np

from envs import arithmetic_corpus
from marft.tokenizers import CharTokenizer

TOK = CharTokenizer()


def test_rows_are_exact_sums_and_masks_cover_real_tokens():
  batch = arithmetic_corpus.train_batch(TOK, seed=3, step=7, batch_size=32, max_operand=99)
  for tokens, mask in zip(batch["tokens"], batch["loss_mask"]):
    n = int(mask.sum())
    assert tokens[0] == TOK.bos_id and tokens[n - 1] == TOK.eos_id
    assert np.all(tokens[n:] == TOK.pad_id)
    left, answer = TOK.decode(tokens[1:n - 1]).split("=")
    a, b = map(int, left.split("+"))
    assert a + b == int(answer) and 0 <= a <= 99 and 0 <= b <= 99


def test_train_and_eval_splits_never_overlap_and_are_deterministic():
  train = set()
  for step in range(50):
    batch = arithmetic_corpus.train_batch(TOK, 0, step, 64, 99)
    train |= {TOK.decode(t).split("=")[0] for t in batch["tokens"]}
  prompts, lengths, answers = arithmetic_corpus.eval_prompts(TOK, 0, 200, 99)
  held_out = {TOK.decode(p[1:n - 1]) for p, n in zip(prompts, lengths)}
  assert not train & held_out
  assert len(train) > 2000
  for p, n, answer in zip(prompts, lengths, answers):
    assert eval(TOK.decode(p[1:n - 1])) == int(answer)  # "a+b" of digits only
  again = arithmetic_corpus.train_batch(TOK, 0, 5, 64, 99)
  np.testing.assert_array_equal(again["tokens"],
                                arithmetic_corpus.train_batch(TOK, 0, 5, 64, 99)["tokens"])
  assert not np.array_equal(again["tokens"],
                            arithmetic_corpus.train_batch(TOK, 0, 6, 64, 99)["tokens"])
