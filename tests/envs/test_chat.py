"""Chat-style prompts and answers: what a real LLM reads and writes, for every task and role."""
import json
import time

import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from envs import chat, math_task
from envs.registry import get_task
from marft.tokenizers import HFTokenizer

TASKS = ("plan_path", "sokoban", "sudoku", "math", "code")


@pytest.mark.parametrize("text, answer", [
    ("<answer>UR</answer>", "UR"),
    ("First I go up.\nThen right. So: <answer> UR </answer>", "UR"),  # reasoning before the tag
    ("<answer>U</answer> no wait <answer>R</answer> done.", "R"),  # the last tag counts
    ("<answer>**RD**</answer>", "RD"),  # markdown
    ("<answer>`RD`</answer>", "RD"),
    ("<ANSWER>rd</ANSWER>", "rd"),
    ("<answer>\n```python\ndef f(x):\n    return x\n```\n</answer>", "def f(x):\n    return x"),
    ("<think>maybe <answer>L</answer></think>I am sure: <answer>R</answer>", "R"),
    ("<think>thinking</think>\n\n<answer>D</answer>trailing words", "D"),
    ("the template opened the block: <answer>L</answer></think><answer>U</answer>", "U"),
    ("<think>unclosed <answer>L</answer>", None),  # still thinking: no answer
    ("I would go right.", None),  # no tag
    ("<answer>R", None),  # an unclosed tag is not an answer
    ("<answer>U</answer><answer>R", "U"),
    ("<answer>U</answer></answer>", "U"),
    ("", None),
])
def test_extract_answer(text, answer):
  assert chat.extract_answer(text) == answer


def test_unclosed_tags_in_linear_time():
  """100k characters of unclosed tags took 17 s when every tag rescanned the rest."""
  start = time.perf_counter()
  assert chat.extract_answer("<answer>U</answer>" + "<answer>" * 12_500) == "U"
  assert chat.last_tag("<search>q</search>" + "<summary>" * 12_500 + "</search>",
                       ("search", "summary")) == ("search", "q")
  assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("text, correct", [
    ("19", True), ("\\boxed{19}", True), ("$\\frac{38}{2}$", True), ("19 pens", True),
    ("38/2", True), ("$19$ pens", True), ("20", False), ("nineteen", False), (None, False),
])
def test_math_verify_grades_free_form_answers(text, correct):
  assert math_task.chat_correct(text, 19) is correct
  assert (math_task.chat_value(text) == 19) is correct


def _chatml_tokenizer():
  raw = tokenizers.Tokenizer(models.BPE(unk_token=None))
  raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>",
                                                                "<|im_end|>", "<think>",
                                                                "</think>"],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  raw.train_from_iterator(["the agent moves up to the goal", "<answer>RD</answer>"] * 10,
                          trainer)
  raw.decoder = decoders.ByteLevel()
  return raw


def _episode(name, kind, style):
  task = get_task(name)
  cfg = task.default_config()
  return task.make_workflow(task.generate_task(3, "train", cfg), kind, cfg, cfg["max_turns"],
                            style)


def _dressed(answer):
  """How an LLM writes `answer`: reasoning, a decoy tag inside <think>, markdown, trailing text."""
  return (f"<think>Maybe <answer>nonsense</answer>.</think>Let me work it out step by step.\n"
          f"**Final answer:** <answer>`{answer}`</answer>\nHope this helps!")


def _play(workflow, respond):
  rewards, invalid = [], []
  while not workflow.done:
    roles = workflow.acting_roles()
    result = workflow.act({role: respond(workflow, role) for role in roles})
    rewards.append({r: o.reward for r, o in result.outcomes.items()} | {"team": result.team_reward})
    invalid.append({r: o.invalid for r, o in result.outcomes.items()})
  return rewards, invalid, workflow.success


@pytest.mark.parametrize("name", TASKS)
@pytest.mark.parametrize("kind", ["single", "mas"])
def test_chat_episode_scores_like_compact_and_renders_through_the_chat_template(name, kind):
  """The expert's answers, dressed as an LLM writes them, earn in `chat` style exactly what the
  bare answers earn in `compact` style; every prompt is a system message stating the answer tag
  then the state, and reaches the model as ChatML turns."""
  compact = _play(_episode(name, kind, "compact"), lambda w, role: w.expert_response(role))
  tok = HFTokenizer(_chatml_tokenizer())
  prompts = []

  def respond(workflow, role):
    messages = workflow.prompt(role)
    prompts.append(messages)
    return _dressed(workflow.expert_response(role))

  assert _play(_episode(name, kind, "chat"), respond) == compact
  assert compact[2]  # the expert solves it
  for messages in prompts:
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "<answer>" in messages[0]["content"] and "Turn " in messages[1]["content"]
    expected = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
                       for m in messages) + "<|im_start|>assistant\n"
    assert tok.decode(tok.chat(messages)) == expected.replace("<|im_start|>", "").replace(
        "<|im_end|>", "")  # the specials are real tokens, skipped when decoding
    ids = tok.chat(messages)
    assert ids.count(tok._tok.token_to_id("<|im_start|>")) == 3


@pytest.mark.parametrize("name", TASKS)
def test_a_chat_answer_without_the_tag_is_a_counted_invalid_action(name):
  workflow = _episode(name, "mas", "chat")
  roles = workflow.acting_roles()
  result = workflow.act({role: f"I think it is {workflow.expert_response(role)}."
                         for role in roles})
  assert all(outcome.invalid for outcome in result.outcomes.values())
  compact = _episode(name, "mas", "compact")
  bad = compact.act({role: "?!" for role in roles})  # the compact penalty of an unparseable one
  assert result.outcomes == bad.outcomes and result.team_reward == bad.team_reward


def test_thinking_never_reaches_the_other_role():
  workflow = _episode("plan_path", "mas", "chat")
  workflow.act({"tool": "<think>SECRET plan: go around</think><answer>R</answer>"})
  shown = json.dumps(workflow.prompt("plan"))
  assert "SECRET" not in shown and "The tool agent proposed R;" in shown


def test_grid_chat_prompt_states_positions_in_words():
  task = {"grid": [".#.", "...", "..."], "start": [0, 0], "goal": [2, 2], "shortest": 4}
  workflow = get_task("plan_path").make_workflow(task, "single", {}, 4, "chat")
  user = workflow.prompt("agent")[1]["content"]
  assert "    1 2 3\n 1  S # .\n 2  . . .\n 3  . . G" in user
  assert "You are at row 1, column 1; the goal is at row 3, column 3." in user
  for answer, moves in (("D, R", 2), ("d r", 2), ("DRX", None)):
    clone = workflow.clone()
    clone.act({"agent": f"<answer>{answer}</answer>"})
    assert clone.moves_made == (moves or 0)


def test_qwen3_thinking_switch():
  raw = _chatml_tokenizer()
  messages = [{"role": "user", "content": "hi"}]
  on, off = HFTokenizer(raw), HFTokenizer(raw, enable_thinking=False)
  assert off.chat(messages)[:len(on.chat(messages))] == on.chat(messages)
  assert raw.decode(off.chat(messages)[len(on.chat(messages)):],
                    skip_special_tokens=False) == "<think>\n\n</think>\n\n"


def test_unknown_prompt_style_is_an_error():
  with pytest.raises(ValueError, match="prompt_style='fancy'"):
    _episode("sudoku", "single", "fancy")
