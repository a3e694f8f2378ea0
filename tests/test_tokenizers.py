"""Character tokenizer and the tokenizer.json wrapper, on a vocabulary trained here."""
import json

import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from marft.tokenizers import CharTokenizer, HFTokenizer, load_tokenizer


def test_char_round_trip_and_chat_prompt():
  tok = load_tokenizer("char")
  text = "move R2 U1\n#.S\n..G"
  ids = tok.encode(text)
  assert len(ids) == len(text) and max(ids) < tok.vocab_size
  assert tok.decode(ids) == text
  assert tok.decode(ids + [tok.eos_id, tok.pad_id]) == text  # specials decode to nothing
  assert tok.encode("é") == [tok.unk_id]
  prompt = tok.chat([{"role": "system", "content": "plan"}, {"role": "user", "content": "S.G"}])
  assert prompt[0] == tok.bos_id and tok.decode(prompt[1:]) == "plan\nS.G\n>"
  with pytest.raises(ValueError, match="vocab_size"):
    CharTokenizer(vocab_size=50)


def _write_tokenizer(path, specials, pad=None):
  tok = tokenizers.Tokenizer(models.BPE(unk_token=None))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=list(specials),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(["the agent moves left then up", "plan a path to the goal"] * 20,
                          trainer)
  tok.decoder = decoders.ByteLevel()
  tok.save(str(path / "tokenizer.json"))
  if pad:
    (path / "tokenizer_config.json").write_text(json.dumps({"pad_token": pad}))
  return tok


def test_chatml_format_matches_qwen_template(tmp_path):
  raw = _write_tokenizer(tmp_path, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                         pad="<|endoftext|>")
  tok = HFTokenizer.from_pretrained(str(tmp_path))
  assert tok.chat_format == "chatml"
  messages = [{"role": "system", "content": "You are the planner."},
              {"role": "user", "content": "plan a path"}]
  expected = ("<|im_start|>system\nYou are the planner.<|im_end|>\n"
              "<|im_start|>user\nplan a path<|im_end|>\n<|im_start|>assistant\n")
  assert tok.chat(messages) == raw.encode(expected, add_special_tokens=False).ids
  assert tok.stop_ids == (raw.token_to_id("<|im_end|>"), raw.token_to_id("<|endoftext|>"))
  assert tok.pad_id == raw.token_to_id("<|endoftext|>")
  assert tok.decode(tok.encode("the agent moves")) == "the agent moves"


def test_llama3_format_and_unknown_format(tmp_path):
  (tmp_path / "a").mkdir()
  (tmp_path / "b").mkdir()
  raw = _write_tokenizer(tmp_path / "a", ["<|begin_of_text|>", "<|end_of_text|>",
                                          "<|start_header_id|>", "<|end_header_id|>",
                                          "<|eot_id|>"])
  tok = load_tokenizer(str(tmp_path / "a"))
  expected = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n")
  assert tok.chat([{"role": "user", "content": "hi"}]) == raw.encode(
      expected, add_special_tokens=False).ids
  assert tok.eos_id == tok.pad_id == raw.token_to_id("<|eot_id|>")
  _write_tokenizer(tmp_path / "b", ["<s>"])
  with pytest.raises(ValueError, match="no chat template"):
    load_tokenizer(str(tmp_path / "b"))
  with pytest.raises(FileNotFoundError):
    load_tokenizer(str(tmp_path))
