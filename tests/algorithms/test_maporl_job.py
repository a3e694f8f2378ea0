"""The MAPoRL and verifier jobs' bad input: one ConfigError each, before anything compiles."""
import types

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


def test_an_unknown_verifier_kind_is_one_config_error():
  c = _config()
  c.verifier.kind = "oracle"
  with pytest.raises(common.ConfigError, match="verifier.kind='oracle'"):
    maporl.check_config(c)


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


def test_answer_credit_against_a_hand_computation():
  """The job's credit path on a shuffled 2-discussion x 2-turn x 2-agent rollout: answer
  rewards (influence reward, one incentive of each kind, the -10 penalty) land on the right
  rows, and token GAE, returns and per-(turn, agent) whitening match numpy loops."""
  # (episode, turn, agent, verifier score, correct, invalid, prompt length, response length)
  rows = [(0, 0, 0, 0.2, 0, 0, 3, 2), (0, 0, 1, 0.9, 1, 0, 2, 3), (0, 1, 0, 0.7, 1, 0, 4, 1),
          (0, 1, 1, 0.6, 1, 0, 3, 3), (1, 0, 0, 0.4, 0, 0, 2, 2), (1, 0, 1, 0.1, 0, 0, 3, 1),
          (1, 1, 0, 0.3, 0, 1, 4, 3), (1, 1, 1, 0.5, 0, 0, 2, 2)]
  order = [5, 2, 7, 0, 3, 6, 1, 4]
  rows = [rows[i] for i in order]
  e, t, a, score, correct, invalid, prompt, length = (np.asarray(c) for c in zip(*rows))
  n, width, total = len(rows), 3, 8
  loss_mask = np.zeros((n, total), np.float32)
  for i in range(n):
    loss_mask[i, prompt[i]:prompt[i] + length[i]] = 1
  batch = types.SimpleNamespace(episode_id=e, turn_id=t, role_id=a, score=score, reward=correct,
                                invalid=invalid, loss_mask=loss_mask)
  valid = (np.arange(width)[None] < length[:, None]).astype(np.float32)
  rng = np.random.default_rng(0)
  kl = rng.normal(size=(n, width)).astype(np.float32) * valid
  values = rng.normal(size=(n, width)).astype(np.float32) * valid
  algo = types.SimpleNamespace(influence_gamma=0.3, alphas=(1.0, 2.0, 4.0, 8.0), penalty=-10.0,
                               kl_coef=0.002, gamma=1.0, lam=0.95)
  rewards, token_advantages, returns = maporl.answer_credit(batch, kl, values, valid, (2, 2, 2),
                                                            algo)

  v = {(r[0], r[1], r[2]): r[3] for r in rows}
  want = {}
  for ep in (0, 1):
    for ag in (0, 1):
      later = (v[ep, 1, 0] + v[ep, 1, 1]) / 2
      want[ep, 0, ag] = (v[ep, 0, ag] + 0.3 * later) / 1.3
      want[ep, 1, ag] = v[ep, 1, ag]
  want[0, 1, 0] += 1.0  # a0: agent 1 revised wrong -> right toward its partner's right answer
  want[0, 0, 1] += 8.0  # a3: agent 2's right answer, and its partner turned right
  want[1, 1, 0] = -10.0  # no parseable answer
  np.testing.assert_allclose(rewards, [want[r[0], r[1], r[2]] for r in rows], rtol=1e-6)

  advantages, want_returns = np.zeros((n, width)), np.zeros((n, width))
  for i in range(n):
    token_reward = -0.002 * kl[i, :length[i]]
    token_reward[-1] += rewards[i]
    running = 0.0
    for j in reversed(range(length[i])):
      after = values[i, j + 1] if j + 1 < length[i] else 0.0
      running = token_reward[j] + after - values[i, j] + 0.95 * running
      advantages[i, j] = running
    want_returns[i, :length[i]] = advantages[i, :length[i]] + values[i, :length[i]]
  np.testing.assert_allclose(returns, want_returns, rtol=1e-5, atol=1e-6)
  whitened = np.zeros((n, width))
  for group in {(r[1], r[2]) for r in rows}:
    members = [i for i in range(n) if (t[i], a[i]) == group]
    entries = np.concatenate([advantages[i, :length[i]] for i in members])
    for i in members:
      whitened[i, :length[i]] = ((advantages[i, :length[i]] - entries.mean())
                                 / np.sqrt(entries.var(ddof=1) + 1e-8))
  want_tokens = np.zeros((n, total))
  for i in range(n):
    want_tokens[i, prompt[i]:prompt[i] + length[i]] = whitened[i, :length[i]]
  np.testing.assert_allclose(token_advantages, want_tokens, rtol=1e-4, atol=1e-5)


def _job_config(tmp_path, **overrides):
  """A 1-layer random policy model and a random verifier of its vocabulary, on disk."""
  from marft.models.hf import save_pretrained
  model_config = get_model_config("tiny", num_layers=1)
  if not (tmp_path / "hf").exists():
    save_pretrained(build_model(model_config, seed=0), model_config, str(tmp_path / "hf"))
    save_scored_lm(ScoredLM(build_model(model_config, seed=1), rngs=nnx.Rngs(1)), model_config,
                   str(tmp_path / "verifier"))
  c = maporl_config.get_config("tiny,1")
  c.model.path, c.model.tokenizer = str(tmp_path / "hf"), "char"
  c.verifier.path = str(tmp_path / "verifier")
  c.task.num_tasks, c.task.eval_tasks, c.algo.k = 2, 2, 2
  c.task.env.max_turns = 2
  c.rollout.max_new_tokens = 4
  c.update_from_flattened_dict(overrides)
  return c


def test_one_iteration_trains_both_policies_and_value_heads(tmp_path):
  import jax
  from marft import sharding
  config = _job_config(tmp_path, **{"optimizer.lr": 1e-2})
  job = maporl.build(config, sharding.make_mesh(data=1, fsdp=1, tensor=1))
  before = jax.tree.map(np.asarray, (job.state.params, job.state.extra["critic"]))
  batch, metrics = job.batch_fn(job.state)
  assert batch["critic"]["tokens"].shape == (4, 2, 2, 4, 128)  # [E = tasks * k, T, A, L, D]
  # A random model writes no number: every answer is penalised, and counted.
  assert metrics["train/penalised_answers"] == 4 * 2 * 2
  assert metrics["train/answer_reward/agent1"] == -10.0
  advantages, response = batch["policy"]["advantages"], batch["policy"]["loss_mask"] > 0
  assert not advantages[~response].any() and advantages[response].any()
  state, step = job.train_step(job.state, batch)
  assert np.asarray(step["finite"]).all() and np.isfinite(float(step["value_loss"]))
  after = jax.tree.map(np.asarray, (state.params, state.extra["critic"]))
  for which in (0, 1):
    delta = [np.abs(a - b).reshape(len(a), -1).max(-1) if which == 0 else np.abs(a - b).max()
             for a, b in zip(jax.tree.leaves(after[which]), jax.tree.leaves(before[which]))]
    if which == 0:  # each agent's own policy moved
      assert all(max(d[p] for d in delta) > 0 for p in (0, 1))
    else:
      assert max(delta) > 0
  evals = job.eval_fn(state)
  for prefix in ("", "alone0/", "alone1/"):
    for mode in ("greedy", "sampled"):
      for t in (1, 2):
        assert 0.0 <= evals[f"eval/{prefix}{mode}_turn{t}_accuracy"] <= 1.0


@pytest.mark.slow  # by default tests/faults kills and resumes the AT-GRPO job the same way
def test_resuming_gives_the_same_metrics(tmp_path):
  """Policies, value heads and their optimizers are in the checkpoint: a run stopped after
  step 1 and resumed logs the uninterrupted run's step-2 metrics."""
  import json
  from marft import sharding, trainer
  mesh = sharding.make_mesh(data=1, fsdp=1, tensor=1)

  def run(workdir, total):
    config = _job_config(tmp_path, **{"total_steps": total, "eval_every": 0,
                                      "checkpoint_every": 1, "log.wandb_mode": "disabled",
                                      "optimizer.lr": 1e-3})
    trainer.run(config, str(workdir), maporl.build(config, mesh))
    records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    return [r for r in records if r.get("step") == total and "train/loss" in r][-1]

  straight = run(tmp_path / "straight", 2)
  run(tmp_path / "resumed", 1)
  resumed = run(tmp_path / "resumed", 2)
  for key in ("train/loss", "train/value_loss", "train/kl", "train/explained_variance",
              "train/answer_reward"):
    assert resumed[key] == straight[key], key


def test_a_ppo_step_follows_the_advantages(tmp_path):
  """The cheap variant of the slow training test: after one update, each agent's response
  tokens' log-probs moved with the advantages of its batch, sum A (logp' - logp) > 0 (seen
  red with the loss's advantages negated); the advantages themselves are checked by
  `test_answer_credit_against_a_hand_computation`."""
  import jax
  import jax.numpy as jnp
  from marft import sharding
  from marft.logprobs import next_token_logprobs
  from marft.models.hf import load_pretrained
  from marft.policies import policy_params, stack_policies
  config = _job_config(tmp_path, **{"optimizer.lr": 1e-4, "algo.minibatches": 1,
                                    "task.num_tasks": 4})
  job = maporl.build(config, sharding.make_mesh(data=1, fsdp=1, tensor=1))
  before = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), job.state.params)
  batch, _ = job.batch_fn(job.state)
  state, _ = job.train_step(job.state, batch)
  graphdef, _, _ = stack_policies(load_pretrained(str(tmp_path / "hf"))[0], 2)
  rows = batch["policy"]
  for p in (0, 1):
    tokens = jnp.asarray(rows["tokens"][p])
    old = next_token_logprobs(nnx.merge(graphdef, policy_params(before, p)), tokens)
    new = next_token_logprobs(nnx.merge(graphdef, policy_params(state.params, p)), tokens)
    weight = rows["advantages"][p][:, 1:] * rows["loss_mask"][p][:, 1:]
    assert float((np.asarray(new - old) * weight).sum()) > 0, p


def test_resuming_with_another_verifier_is_refused(tmp_path):
  """The verifier is part of what a run depends on: a run resumed over another verifier (a
  retrained recipe, another path) would mix two reward functions, so it is refused."""
  from marft import sharding, trainer
  mesh = sharding.make_mesh(data=1, fsdp=1, tensor=1)
  overrides = {"total_steps": 1, "eval_every": 0, "checkpoint_every": 1,
               "log.wandb_mode": "disabled"}
  config = _job_config(tmp_path, **overrides)
  trainer.run(config, str(tmp_path / "run"), maporl.build(config, mesh))
  other = tmp_path / "other_verifier"
  other.mkdir()
  for path in (tmp_path / "verifier").rglob("*"):
    target = other / path.relative_to(tmp_path / "verifier")
    target.mkdir(exist_ok=True) if path.is_dir() else target.write_bytes(path.read_bytes())
  config = _job_config(tmp_path, **{**overrides, "total_steps": 2,
                                    "verifier.path": str(other)})
  with pytest.raises(trainer.ProvenanceMismatch, match="verifier"):
    trainer.run(config, str(tmp_path / "run"), maporl.build(config, mesh))
