"""The rollout engine on a scripted policy and a toy two-role workflow, checked by hand."""
import numpy as np
import pytest

import jax

from marft.rollout.engine import RolloutConfig, Sample, collect
from marft.tokenizers import CharTokenizer
from tests.rollout.toy_workflow import GuessWorkflow

TOK = CharTokenizer()


def scripted(answers):
  """A sampler answering from a queue of strings, in request order, with logprob -0.5."""
  queue = list(answers)
  calls = []

  def sample(prompts, key):
    calls.append([TOK.decode(p) for p in prompts])
    out = []
    for _ in prompts:
      ids = TOK.encode(queue.pop(0)) + [TOK.eos_id]
      out.append(Sample(np.asarray(ids, np.int32), np.full(len(ids), -0.5, np.float32)))
    return out

  sample.calls = calls
  return sample


def test_tree_sampling_rows_groups_and_best_branch():
  tool, plan = scripted(["1", "3"]), scripted(["2", "3"])
  rollout = collect([GuessWorkflow({"target": "3"}, max_turns=2)], [tool, plan], TOK,
                    jax.random.key(0), mapping={"tool": 0, "plan": 1},
                    config=RolloutConfig(k=2, tree=True))
  b = rollout.batch
  # Stage 1: tool candidates "1", "3" (group task 0/tool/turn 0); branch 1 wins (0.5 > 0).
  # Stage 2: both copies continue from branch 1, so both plan prompts show the proposal "3".
  assert plan.calls == [["P03\n>", "P03\n>"]]
  assert tool.calls == [["T0\n>", "T0\n>"]]
  np.testing.assert_array_equal(b.role_id, [0, 0, 1, 1])
  np.testing.assert_array_equal(b.policy_id, [0, 0, 1, 1])
  np.testing.assert_array_equal(b.turn_id, [0, 0, 0, 0])
  np.testing.assert_array_equal(b.task_id, [0, 0, 0, 0])
  np.testing.assert_array_equal(b.branch_id, [0, 1, 0, 1])
  np.testing.assert_allclose(b.reward, [0.0, 0.5, 0.0, 1.0])
  np.testing.assert_allclose(b.team_reward, [0.0, 0.0, 0.0, 1.0])
  np.testing.assert_allclose(b.episode_return, [1.0, 1.0, 1.0, 1.0])  # chosen path: 0 + 1
  # Row 1: prompt "<bos>T0\n>" (5 ids) then response "3<eos>" (2 ids), masked and scored.
  prompt = TOK.chat([{"role": "user", "content": "T0"}])
  np.testing.assert_array_equal(b.tokens[1, :7], prompt + TOK.encode("3") + [TOK.eos_id])
  np.testing.assert_array_equal(b.loss_mask[1, :8], [0, 0, 0, 0, 0, 1, 1, 0])
  np.testing.assert_allclose(b.behavior_logp[1, 5:7], [-0.5, -0.5])
  assert b.behavior_logp[1, :5].sum() == 0 and b.loss_mask.sum() == 8
  assert rollout.metrics["rollout/success_rate"] == 1.0
  assert rollout.metrics["rollout/invalid_actions"] == 0.0
  assert rollout.transcripts[0]["success"] and len(rollout.transcripts[0]["steps"]) == 2


def test_sampled_continuation_follows_the_first_copy_not_the_best():
  # Same candidates as above, but the tree continues from copy 0's tool answer "1" (reward 0),
  # so both plan prompts show "1"; plan "2", "3": copy 1 solves, yet copy 0's "2" is followed,
  # so turn 1 is played from an unsolved state: tool "3", "3", plan "3", "3".
  tool, plan = scripted(["1", "3", "3", "3"]), scripted(["2", "3", "3", "3"])
  rollout = collect([GuessWorkflow({"target": "3"}, max_turns=2)], [tool, plan], TOK,
                    jax.random.key(0), mapping={"tool": 0, "plan": 1},
                    config=RolloutConfig(k=2, tree=True, continuation="sampled"))
  b = rollout.batch
  assert plan.calls == [["P01\n>", "P01\n>"], ["P13\n>", "P13\n>"]]
  assert tool.calls == [["T0\n>", "T0\n>"], ["T1\n>", "T1\n>"]]
  np.testing.assert_array_equal(b.turn_id, [0, 0, 0, 0, 1, 1, 1, 1])
  np.testing.assert_allclose(b.reward, [0.0, 0.5, 0.0, 1.0, 0.5, 0.5, 1.0, 1.0])
  # The followed path: plan "2" at turn 0 (team 0), plan "3" at turn 1 (team 1).
  np.testing.assert_allclose(b.episode_return, [1.0] * 8)
  assert rollout.metrics["rollout/success_rate"] == 1.0
  assert len(rollout.transcripts[0]["steps"]) == 4


def test_unknown_continuation_is_a_clear_error():
  with pytest.raises(ValueError, match="continuation="):
    collect([GuessWorkflow({"target": "3"}, max_turns=1)], [scripted([])], TOK,
            jax.random.key(0), mapping={"tool": 0, "plan": 0},
            config=RolloutConfig(k=2, continuation="greedy"))


def test_independent_copies_run_their_own_episodes():
  # Branch 0 fails turn 0 and plays turn 1; branch 1 solves at turn 0.
  # One shared policy answers in request order: turn 0 tools (b0 "x" invalid, b1 "3"), turn 0
  # plans (b0 "2", b1 "3": branch 1 solved), then branch 0 alone: tool "3", plan "3".
  shared = scripted(["x", "3", "2", "3", "3", "3"])
  rollout = collect([GuessWorkflow({"target": "3"}, max_turns=2)], [shared], TOK,
                    jax.random.key(0), mapping={"tool": 0, "plan": 0},
                    config=RolloutConfig(k=2, tree=False))
  b = rollout.batch
  np.testing.assert_array_equal(b.episode_id, [0, 1, 0, 1, 0, 0])
  np.testing.assert_array_equal(b.turn_id, [0, 0, 0, 0, 1, 1])
  np.testing.assert_array_equal(b.role_id, [0, 0, 1, 1, 0, 1])
  np.testing.assert_array_equal(b.policy_id, [0] * 6)
  np.testing.assert_allclose(b.reward, [0.0, 0.5, 0.0, 1.0, 0.5, 1.0])
  np.testing.assert_allclose(b.episode_return, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
  assert rollout.metrics["rollout/success_rate"] == 1.0
  assert rollout.metrics["rollout/invalid_actions"] == 1.0
  assert rollout.metrics["rollout/rows"] == 6.0


def test_missing_role_mapping_is_a_clear_error():
  with pytest.raises(ValueError, match="plan"):
    collect([GuessWorkflow({"target": "3"}, 1)], [scripted([])], TOK, jax.random.key(0),
            mapping={"tool": 0}, config=RolloutConfig(k=1))


def test_a_stage_larger_than_max_batch_is_generated_in_chunks(monkeypatch):
  """`max_batch` bounds each generate call (a verifier's data set of thousands of questions
  once asked for one 27 GB call); greedy chunks give exactly the one-call samples."""
  from marft.models.config import get_model_config
  from marft.models.decoder import build_model
  from marft.rollout import engine
  model = build_model(get_model_config("tiny", num_layers=1, vocab_size=TOK.vocab_size))
  prompts = [TOK.encode(f"Q{i} {'x' * (i % 4)}") for i in range(7)]
  sizes = []
  real = engine.generate
  monkeypatch.setattr(engine, "generate", lambda m, tokens, *a, **k: (
      sizes.append(len(tokens)), real(m, tokens, *a, **k))[1])
  greedy = dict(k=1, tree=False, temperature=0.0, max_new_tokens=4)
  whole = engine.model_sampler(model, TOK, RolloutConfig(**greedy))(prompts, jax.random.key(0))
  chunked = engine.model_sampler(model, TOK, RolloutConfig(**greedy, max_batch=3))(
      prompts, jax.random.key(0))
  assert sizes == [7, 3, 3, 1]
  for a, b in zip(whole, chunked, strict=True):
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_allclose(a.logprobs, b.logprobs, rtol=1e-5, atol=1e-6)
