"""The MAPoRL and verifier jobs' bad input: one ConfigError each, before anything compiles."""
import ml_collections
import numpy as np
import pytest
from flax import nnx

from experiments import common, maporl, verifier
from experiments.configs import maporl as maporl_config
from marft.models.config import get_model_config
from marft.models.decoder import build_model
from marft.models.heads import ScoredLM
from marft.models.hf import save_scored_lm


def _config(**algo):
  c = maporl_config.get_config("tiny,0.5")
  for key, value in algo.items():
    c.algo[key] = value
  return c


def test_config_cells_set_every_incentive_and_reject_bad_cells():
  assert tuple(maporl_config.get_config("tiny,2").algo.alphas) == (2.0,) * 4
  assert tuple(maporl_config.get_config().algo.alphas) == (0.0,) * 4
  for cell in ("huge", "tiny,x", "tiny,1,2"):
    with pytest.raises(ValueError, match="config cell"):
      maporl_config.get_config(cell)


@pytest.mark.parametrize("key,value,message", [
    ("alphas", (1.0, 2.0), "four incentives"),
    ("k", 0, "at least one discussion"),
    ("minibatches", 3, "choose 1, 2, 4 or 8"),
    ("influence_gamma", 1.5, "in \\[0, 1\\]"),
])
def test_check_config_names_the_bad_key(key, value, message):
  with pytest.raises(common.ConfigError, match=message):
    maporl.check_config(_config(**{key: value}))


def test_only_the_discussion_workflow_is_trained():
  c = _config()
  c.task.workflow = "single"
  with pytest.raises(common.ConfigError, match="discussion"):
    maporl.check_config(c)


@pytest.mark.parametrize("agents,turns", [(0, 3), (2, 0)])
def test_fewer_than_one_agent_or_turn_is_one_config_error(agents, turns):
  c = _config()
  c.task.env.agents, c.task.env.max_turns = agents, turns
  if not agents:
    c.policies.mapping = {"agent1": 0}
  with pytest.raises(common.ConfigError, match="at least one"):
    maporl.build(c, None)


def test_a_verifier_of_another_vocabulary_is_refused(tmp_path):
  model_config = get_model_config("tiny", vocab_size=96)
  save_scored_lm(ScoredLM(build_model(model_config, seed=0), rngs=nnx.Rngs(0)), model_config,
                 str(tmp_path))
  c = _config()
  c.verifier.path = str(tmp_path)
  with pytest.raises(common.ConfigError, match="vocabulary of 96 tokens, the policies 128"):
    verifier.load(c, 128)


def test_an_unreadable_verifier_is_one_config_error(tmp_path):
  model_config = get_model_config("tiny")
  save_scored_lm(ScoredLM(build_model(model_config, seed=0), rngs=nnx.Rngs(0)), model_config,
                 str(tmp_path))
  (tmp_path / "score_head" / "head.safetensors").write_bytes(b"not a safetensors file")
  c = _config()
  c.verifier.path = str(tmp_path)
  with pytest.raises(common.ConfigError, match="score head"):
    verifier.load(c, model_config.vocab_size)


def test_response_mask_marks_exactly_the_response_tokens():
  mask = verifier.response_mask(np.array([2, 0]), np.array([5, 1]), 6)
  np.testing.assert_array_equal(mask, [[0, 0, 1, 1, 1, 0], [1, 0, 0, 0, 0, 0]])
