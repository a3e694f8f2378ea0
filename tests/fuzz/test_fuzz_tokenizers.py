"""Fuzzes the character tokenizer: encoding any text, decoding any ids, chat prompts."""
import numpy as np
import pytest
from hypothesis import example
from hypothesis import strategies as st

from marft.tokenizers import CharTokenizer, load_tokenizer
from tests.fuzz.strategies import anything, fuzz, texts, wrong_types

TOKENIZER = CharTokenizer()


@fuzz(texts, examples=10, slow=1000)
@example("a\x00\u202eb\u200b\n~")
def test_encode_decode(text):
  ids = TOKENIZER.encode(text)
  assert len(ids) == len(text) and all(0 <= i < TOKENIZER.vocab_size for i in ids)
  known = "".join(c for c in text if c in CharTokenizer.CHARS)
  assert TOKENIZER.decode(ids) == known  # unknown characters decode to nothing
  assert TOKENIZER.decode(np.asarray(ids, np.int32)) == known


@fuzz(st.lists(st.integers(-2**63, 2**63 - 1), max_size=50), examples=15, slow=3000)
def test_decode_any_ids(ids):
  assert isinstance(TOKENIZER.decode(ids), str)


@fuzz(st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]),
                                      "content": texts}), max_size=3), examples=10, slow=1000)
def test_chat(messages):
  ids = TOKENIZER.chat(messages)
  assert ids[0] == TOKENIZER.bos_id and all(0 <= i < TOKENIZER.vocab_size for i in ids)


@fuzz(wrong_types, examples=10, slow=2000)
@example(None)
@example(["a", "b"])
def test_encode_wrong_types(value):
  with pytest.raises(TypeError, match="text"):
    TOKENIZER.encode(value)


@fuzz(st.one_of(st.integers(-10**6, 10**6), wrong_types), examples=15, slow=2000)
@example(None)
@example(-1)
def test_vocab_size(vocab_size):
  try:
    tokenizer = CharTokenizer(vocab_size)
  except ValueError as e:
    assert "vocab_size" in str(e)
  else:
    assert tokenizer.vocab_size == vocab_size >= 4 + len(CharTokenizer.CHARS)


@fuzz(anything, examples=10, slow=2000)
@example("")
@example("\x00")
@example(None)
def test_load_tokenizer(name):
  """Anything but "char" names a directory with a tokenizer.json: a clear error here."""
  try:
    load_tokenizer(name)
  except (FileNotFoundError, ValueError) as e:
    assert "tokenizer" in str(e)
  else:
    assert name == "char"
