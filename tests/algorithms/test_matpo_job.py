"""The MATPO job on a real rollout of scripted agents: every row, planner or worker, gets its
episode's group-normalised final reward (numpy by hand), per-role policies get their roles'
rows, and the update runs."""
import zlib

import jax
import numpy as np
import pytest

from experiments import common, rl
from experiments import matpo as matpo_job
from marft import sharding
from marft.models.config import get_model_config
from marft.models.decoder import build_model
from marft.models.hf import save_pretrained
from marft.rollout.engine import Sample
from marft.tokenizers import CharTokenizer

TOK = CharTokenizer()


def _config(tmp_path, regime):
  from experiments.configs import matpo
  model_config = get_model_config("tiny", num_layers=1)
  save_pretrained(build_model(model_config), model_config, str(tmp_path / "hf"))
  config = matpo.get_config(f"{regime},tiny,0")
  config.model.path, config.model.tokenizer = str(tmp_path / "hf"), "char"
  config.task.num_tasks, config.task.eval_tasks, config.algo.k = 3, 2, 4
  config.algo.minibatches = 1  # rows in rollout order, as the checks below read them
  return config


def _scripted(model, tokenizer, rollout_config):
  """Planner: delegates each hop in turn, then answers the last summary or a wrong name by a
  coin of the prompt, its place in the call and the key; worker: searches its subtask, then
  summarises the hit that answers it."""
  def sample(prompts, key):
    seed = int(np.asarray(jax.random.key_data(key)).sum())
    out = []
    for index, prompt in enumerate(prompts):
      lines = TOK.decode(prompt).rstrip(">").strip().split("\n")
      coin = zlib.crc32(f"{seed}/{index}/{lines}".encode()) % 2
      if lines[0].startswith("P "):  # P <entity> <r1> [<r2>], then D <subtask> / =<summary>
        words, done = lines[0].split(), (len(lines) - 1) // 2
        head = lines[-1][1:] if done else words[1]
        text = (f"D {head} {words[2 + done]}" if done < len(words) - 2 else
                f"A {head}" if coin else "A Nobody")
      elif len(lines) == 1:
        text = "S " + lines[0].split("|")[-1]
      else:
        subtask = lines[0].split("|")[-1]
        hits = [h for h in lines[-1][1:].split(";") if h.startswith(subtask + " ")]
        text = "F " + (hits[0].split()[-1] if hits else "none")
      ids = TOK.encode(text) + [TOK.eos_id]
      out.append(Sample(np.asarray(ids, np.int32), np.full(len(ids), -0.7, np.float32)))
    return out
  return sample


@pytest.mark.parametrize("regime", ["matpo", "matpo_per_role"])
def test_matpo_batch_gives_each_row_its_episodes_group_advantage(tmp_path, monkeypatch, regime):
  config = _config(tmp_path, regime)
  monkeypatch.setattr(rl, "model_sampler", _scripted)
  seen = []
  real_collect = rl.collect
  monkeypatch.setattr(rl, "collect", lambda *a, **k: seen.append(real_collect(*a, **k))
                      or seen[-1])
  job = matpo_job.build(config, sharding.make_mesh(data=1, fsdp=1, tensor=1))
  batch, metrics = job.batch_fn(job.state)
  b = jax.tree.map(np.asarray, seen[0].batch)
  workers = b.parent_id >= 0
  assert workers.any() and (b.role_id[workers] == 1).all()
  # By hand: an episode's return normalised over the K episodes of its task, on all its rows.
  expected = np.zeros(b.num_rows)
  for row in range(b.num_rows):
    same_task = np.unique(b.episode_id[b.task_id == b.task_id[row]])
    returns = np.asarray([b.episode_return[b.episode_id == e][0] for e in same_task], np.float64)
    own = b.episode_return[row]
    expected[row] = (own - returns.mean()) / (returns.std(ddof=1) + 1e-6)
  assert np.abs(expected).max() > 0.5  # the coin makes returns differ within tasks
  policies = [0, 1] if regime == "matpo_per_role" else [0, 0]
  for p in sorted(set(policies)):
    mine = np.asarray([policies[r] == p for r in b.role_id])
    got = batch["advantages"][p][:mine.sum()]
    np.testing.assert_allclose(got, expected[mine], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(batch["tokens"][p][:mine.sum()], b.tokens[mine])
    assert batch["row_weight"][p][:mine.sum()].all() and not batch["row_weight"][p][mine.sum():].any()
  assert metrics["rollout/search_calls"] > 0
  state, step_metrics = job.train_step(job.state, batch)
  assert np.isfinite(np.asarray(step_metrics["loss"])).all()


def test_matpo_rejects_tree_sampling(tmp_path):
  config = _config(tmp_path, "matpo")
  config.algo.tree = True
  with pytest.raises(common.ConfigError, match="tree"):
    matpo_job.build(config, sharding.make_mesh(data=1, fsdp=1, tensor=1))
