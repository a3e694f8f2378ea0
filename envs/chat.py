"""The `chat` prompt style: prompts a real LLM can read, and answers taken from what it writes.

Every task renders each role's prompt in one of `PROMPT_STYLES` (`task.prompt_style`):
- `compact`: one short user message (`T S.#../...G.`), for character-level models;
- `chat`: a system message that states the role, the rules and the answer format, then a user
  message with the state in words (and as a grid where there is one) and what the other roles
  said or the tool returned; the answer goes inside `<answer>...</answer>`.

`extract_answer` is the one reader of chat answers: `<think>...</think>` blocks are dropped (so
reasoning never reaches a parser or another role), the last complete `<answer>` tag counts
(reasoning before it, several tags and trailing text are fine), and markdown around its content
(code fences, backticks, bold) is removed. No tag: None, which every task scores as an invalid
action with its penalty.
"""
from __future__ import annotations

import re

from marft.rollout.workflow import Message

PROMPT_STYLES = ("compact", "chat")
ANSWER_TAG = "answer"

_THINK_BLOCK = re.compile(r"<think>.*?(</think>|\Z)", re.DOTALL | re.IGNORECASE)
_THINK_END = re.compile(r"</think>", re.IGNORECASE)
_FENCE = re.compile(r"\A```[\w+-]*[ \t]*\n?(.*?)\n?```\Z", re.DOTALL)
_WRAPPERS = ("**", "__", "`", "*")


def check_prompt_style(style: str, supported: tuple[str, ...] = PROMPT_STYLES) -> str:
  """`style` if the task renders it, else a ValueError naming the styles it has."""
  if style not in supported:
    raise ValueError(f"prompt_style={style!r}: this task renders {supported}")
  return style


def strip_thinking(text: str) -> str:
  """`text` without its `<think>...</think>` blocks; an unclosed `<think>` runs to the end, and
  text before a stray `</think>` (a template that opened the block itself) is thinking too."""
  parts = _THINK_END.split(text)
  if len(parts) > 1 and "<think>" not in parts[0].lower():
    text = parts[-1]
  return _THINK_BLOCK.sub("", text)


def unwrap_markdown(text: str) -> str:
  """`text` stripped, without a surrounding code fence, backticks or bold/italic markers."""
  text = text.strip()
  fenced = _FENCE.match(text)
  if fenced:
    return fenced.group(1).strip()
  changed = True
  while changed:
    changed = False
    for mark in _WRAPPERS:
      if len(text) > 2 * len(mark) and text.startswith(mark) and text.endswith(mark):
        text, changed = text[len(mark):-len(mark)].strip(), True
  return text


def extract_answer(text: str) -> str | None:
  """The content of the last complete `<answer>` tag outside `<think>` blocks, unwrapped of
  markdown; None when there is none (an invalid action) or `text` is not text."""
  if not isinstance(text, str):
    return None
  tag = last_tag(strip_thinking(text), (ANSWER_TAG,))
  return unwrap_markdown(tag[1]) if tag else None


def last_tag(text: str, names: tuple[str, ...]) -> tuple[str, str] | None:
  """`(name, content)` of the last complete `<name>...</name>` tag of `names` (in any ASCII
  case), tags taken left to right, each closed by the first closing tag of its name after it;
  None when there is none. Linear: once an opening tag has no closing tag after it, neither
  has any later one of its name (a lazy regex rescanned the rest of the text from each)."""
  flags = re.IGNORECASE | re.ASCII
  opening = re.compile("<(" + "|".join(map(re.escape, names)) + ")>", flags)
  found, unclosed, pos = None, set(), 0
  while tag := opening.search(text, pos):
    name = tag.group(1).lower()
    close = None if name in unclosed else re.compile(f"</{re.escape(name)}>", flags).search(
        text, tag.end())
    if close is None:
      unclosed.add(name)
      pos = tag.start() + 1
    else:
      found, pos = (name, text[tag.end():close.start()]), close.end()
  return found


def answer_of(response: str, style: str) -> str | None:
  """What a task's parser reads from `response`: the whole text in `compact` style, the tagged
  answer (`extract_answer`) in `chat` style; None (an invalid action) when it is not text."""
  if not isinstance(response, str):
    return None
  return response if style == "compact" else extract_answer(response)


def system_prompt(role: str, rules: str, answer_format: str) -> str:
  """The chat system message: who the role is, the rules of the task, how to answer."""
  return (f"{role}\n\n{rules}\n\nThink step by step if it helps, then give your final answer "
          f"inside <{ANSWER_TAG}></{ANSWER_TAG}> tags, {answer_format}. Only the last "
          f"<{ANSWER_TAG}> tag counts; an answer without one is invalid.")


def chat_messages(system: str, user: str) -> list[Message]:
  """A system message and one user message."""
  return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def grid_lines(rows: list[str]) -> str:
  """A grid as lines of space-separated cells under a header of column numbers, each line led
  by its row number (rows and columns count from 1 at the top left)."""
  header = "    " + " ".join(str(c + 1) for c in range(len(rows[0])))
  return "\n".join([header] + [f"{r + 1:>2}  " + " ".join(row) for r, row in enumerate(rows)])


def cell_words(cell: tuple[int, int]) -> str:
  """`(0, 2)` -> `row 1, column 3` (1-based, as `grid_lines` numbers them)."""
  return f"row {cell[0] + 1}, column {cell[1] + 1}"


def turn_words(turn: int, max_turns: int) -> str:
  """`Turn 2 of 6.` (1-based)."""
  return f"Turn {turn + 1} of {max_turns}."
