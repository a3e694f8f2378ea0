"""Tokenizers: a character tokenizer for tiny tasks and a `tokenizer.json` wrapper for real models.

Both expose the same small interface, so the rollout engine never asks which one it holds:
`encode`, `decode`, `chat` (role-tagged messages -> prompt ids ending where the assistant's
answer starts), `pad_id`, `eos_id`, `stop_ids`, `vocab_size`, and `has_chat_template` (whether
it renders real chat turns, which `chat`-style prompts need).
"""
from __future__ import annotations

import json
import numbers
import os
from collections.abc import Sequence
from typing import Protocol

import tokenizers

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


class Tokenizer(Protocol):
  pad_id: int
  eos_id: int
  stop_ids: tuple[int, ...]
  vocab_size: int
  has_chat_template: bool

  def encode(self, text: str) -> list[int]: ...
  def decode(self, ids: Sequence[int]) -> str: ...
  def chat(self, messages: Sequence[Message]) -> list[int]: ...


class CharTokenizer:
  """One id per character: `<pad> <bos> <eos> <unk>`, newline, then printable ASCII.

  A chat renders each message as its content on one line and ends with `>` (the assistant's
  turn): short prompts for ~1M-parameter models. The role goes in the content when it matters.
  """

  SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
  CHARS = "\n" + "".join(chr(c) for c in range(32, 127))
  ANSWER_PROMPT = ">"
  has_chat_template = False

  def __init__(self, vocab_size: int = 128):
    needed = len(self.SPECIALS) + len(self.CHARS)
    if not isinstance(vocab_size, numbers.Integral) or vocab_size < needed:
      raise ValueError(f"CharTokenizer needs an integer vocab_size >= {needed}, got "
                       f"{vocab_size!r}")
    self.vocab_size = vocab_size
    self.pad_id, self.bos_id, self.eos_id, self.unk_id = range(4)
    self.stop_ids = (self.eos_id,)
    self._ids = {c: i + len(self.SPECIALS) for i, c in enumerate(self.CHARS)}
    self._chars = {i: c for c, i in self._ids.items()}

  def encode(self, text: str) -> list[int]:
    if not isinstance(text, str):
      raise TypeError(f"encode takes text, got {type(text).__name__}")
    return [self._ids.get(c, self.unk_id) for c in text]

  def decode(self, ids: Sequence[int]) -> str:
    return "".join(self._chars.get(int(i), "") for i in ids)

  def chat(self, messages: Sequence[Message]) -> list[int]:
    text = "".join(m["content"] + "\n" for m in messages) + self.ANSWER_PROMPT
    return [self.bos_id] + self.encode(text)


# Chat formats of the supported families, as their chat templates render them.
_CHAT_FORMATS = {
    "chatml": dict(message="<|im_start|>{role}\n{content}<|im_end|>\n",
                   answer="<|im_start|>assistant\n", begin="",
                   stops=("<|im_end|>", "<|endoftext|>")),
    "llama3": dict(message="<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>",
                   answer="<|start_header_id|>assistant<|end_header_id|>\n\n",
                   begin="<|begin_of_text|>", stops=("<|eot_id|>", "<|end_of_text|>")),
}


# Qwen3's template with `enable_thinking=False` opens the answer with an empty thinking block.
_NO_THINKING = "<think>\n\n</think>\n\n"


class HFTokenizer:
  """A `tokenizers.Tokenizer` (from `tokenizer.json`) with the family's chat format.

  The format is `chatml` (Qwen) or `llama3`: given, else read from the `chat_template` of
  `tokenizer_config.json`, else from the special tokens in the vocabulary. `pad_id` comes from
  `tokenizer_config.json` when it names a pad token, else the end-of-sequence id. With
  `enable_thinking=False` a vocabulary with `<think>` (Qwen3) gets the empty thinking block its
  template adds, so the model answers without reasoning first; either way `envs.chat` drops
  `<think>` blocks before a parser or another role sees the answer.
  """

  has_chat_template = True

  def __init__(self, tokenizer: tokenizers.Tokenizer, chat_format: str | None = None,
               pad_token: str | None = None, enable_thinking: bool = True):
    self._tok = tokenizer
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    if chat_format is None:
      chat_format = next((name for name, f in _CHAT_FORMATS.items() if f["stops"][0] in vocab),
                         None)
    if chat_format not in _CHAT_FORMATS:
      raise ValueError(f"this tokenizer has no chat template marft can render (ChatML "
                       f"<|im_start|> or Llama 3 <|start_header_id|> turns); pass chat_format, "
                       f"one of {sorted(_CHAT_FORMATS)}")
    self.chat_format = chat_format
    self._format = dict(_CHAT_FORMATS[chat_format])
    if not enable_thinking and "<think>" in vocab:
      self._format["answer"] += _NO_THINKING
    self.stop_ids = tuple(vocab[s] for s in self._format["stops"] if s in vocab)
    self.eos_id = self.stop_ids[0]
    self.pad_id = vocab.get(pad_token, self.eos_id) if pad_token else self.eos_id
    self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)

  @classmethod
  def from_pretrained(cls, path: str, chat_format: str | None = None,
                      enable_thinking: bool = True) -> "HFTokenizer":
    """Reads `path/tokenizer.json` (and `tokenizer_config.json` if present)."""
    file = os.path.join(path, "tokenizer.json")
    if not os.path.exists(file):
      raise FileNotFoundError(f"{path} has no tokenizer.json")
    pad_token = None
    config_file = os.path.join(path, "tokenizer_config.json")
    if os.path.exists(config_file):
      with open(config_file) as f:
        tokenizer_config = json.load(f)
      pad = tokenizer_config.get("pad_token")
      pad_token = pad["content"] if isinstance(pad, dict) else pad
      if chat_format is None and "chat_template" in tokenizer_config:
        chat_format = _format_of_template(str(tokenizer_config["chat_template"]), path)
    try:
      return cls(tokenizers.Tokenizer.from_file(file), chat_format, pad_token, enable_thinking)
    except ValueError as e:
      raise ValueError(f"{path}: {e}") from e

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def decode(self, ids: Sequence[int]) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

  def chat(self, messages: Sequence[Message]) -> list[int]:
    text = self._format["begin"] + "".join(
        self._format["message"].format(role=m["role"], content=m["content"]) for m in messages)
    return self.encode(text + self._format["answer"])


def _format_of_template(template: str, path: str) -> str:
  """The chat format a `chat_template` renders, or a ValueError naming `path`."""
  for name, markers in (("chatml", "<|im_start|>"), ("llama3", "<|start_header_id|>")):
    if markers in template:
      return name
  raise ValueError(f"{path}: the chat_template of tokenizer_config.json renders neither ChatML "
                   "(<|im_start|>) nor Llama 3 (<|start_header_id|>) turns")


def load_tokenizer(name_or_path: str, vocab_size: int = 128,
                   enable_thinking: bool = True) -> Tokenizer:
  """`"char"` gives the character tokenizer; a directory gives its `tokenizer.json`."""
  if not isinstance(name_or_path, (str, os.PathLike)):
    raise ValueError(f"tokenizer {name_or_path!r}: give 'char' or a directory with a "
                     "tokenizer.json")
  if name_or_path == "char":
    return CharTokenizer(vocab_size)
  return HFTokenizer.from_pretrained(name_or_path, enable_thinking=enable_thinking)

