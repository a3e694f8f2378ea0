"""Corrupted expert demonstrations and their SFT rows."""
import numpy as np

from marft.rollout.demonstrations import corrupt, demonstrations, sft_rows
from marft.tokenizers import CharTokenizer
from tests.rollout.toy_workflow import GuessWorkflow

TOK = CharTokenizer()


def test_corrupt_makes_exactly_one_edit():
  rng = np.random.default_rng(0)
  for _ in range(200):
    out = corrupt("UDLR", "XY", rng)
    if len(out) == 4:  # replacement
      assert sum(a != b for a, b in zip(out, "UDLR")) <= 1
    elif len(out) == 5:  # insertion of X or Y
      assert any(out[:i] + out[i + 1:] == "UDLR" and out[i] in "XY" for i in range(5))
    else:  # deletion
      assert len(out) == 3 and any("UDLR"[:i] + "UDLR"[i + 1:] == out for i in range(4))


def test_expert_demonstrations_and_rows():
  workflows = [GuessWorkflow({"target": str(d)}, max_turns=2) for d in range(5)]
  clean = demonstrations(workflows, TOK, corruption=0.0, seed=0, alphabet="0123456789")
  assert len(clean) == 10  # tool + plan, solved at turn 0
  tool_prompt, tool_answer = clean[0]
  assert tool_prompt == TOK.chat([{"role": "user", "content": "T0"}])
  assert tool_answer == TOK.encode("0") + [TOK.eos_id]
  assert all(not w.done for w in workflows)  # the caller's workflows are not consumed
  noisy = demonstrations(workflows, TOK, corruption=1.0, seed=0, alphabet="0123456789")
  assert len(noisy) > 10  # corrupted plans fail turn 0 and play turn 1
  rows = sft_rows(clean, width=12, pad_id=TOK.pad_id)
  prompt, answer = clean[3]
  np.testing.assert_array_equal(rows["tokens"][3, :len(prompt) + len(answer)], prompt + answer)
  np.testing.assert_array_equal(rows["loss_mask"][3], [0] * len(prompt) + [1] * len(answer) + [
      0] * (12 - len(prompt) - len(answer)))
  assert len(sft_rows(clean, width=6, pad_id=0)["tokens"]) == 0  # too long: dropped


def test_heuristic_fraction_replaces_expert_responses():
  from envs import plan_path
  from marft.tokenizers import CharTokenizer
  tokenizer = CharTokenizer()
  task = {"grid": [".#.", ".#.", "..."], "start": [0, 0], "goal": [0, 2], "shortest": 6}
  wf = plan_path.make_workflow(task, "single", {"max_moves_per_turn": 2}, max_turns=3)
  answers = lambda h: [tokenizer.decode(r[:-1]) for _, r in demonstrations(
      [wf], tokenizer, corruption=0.0, seed=0, alphabet="UDLR", heuristic=h)]
  assert answers(0.0) == ["DD", "RR", "UU"]  # the detour around the wall
  assert answers(1.0) == ["RR", "RR", "RR"]  # always the blind straight line, blocked
