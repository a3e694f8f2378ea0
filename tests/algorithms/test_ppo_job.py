"""The MARFT PPO job: the [episode, step, agent] layout, the actor loss on a real model, one
iteration of every critic kind, and bad configs rejected before anything compiles."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from experiments import common, ppo
from marft import sharding
from marft.compiles import CompileCounter
from marft.logprobs import next_token_logprobs
from marft.models.config import get_model_config
from marft.models.decoder import build_model
from marft.rollout.batch import TurnBatch


def _rows(episode, turn, role, team_reward):
  n = len(episode)
  z = np.zeros(n, np.int32)
  return TurnBatch(tokens=np.zeros((n, 4), np.int32), loss_mask=np.zeros((n, 4), np.float32),
                   behavior_logp=np.zeros((n, 4), np.float32), policy_id=z,
                   role_id=np.asarray(role, np.int32), turn_id=np.asarray(turn, np.int32),
                   episode_id=np.asarray(episode, np.int32), task_id=z, branch_id=z,
                   reward=np.zeros(n, np.float32),
                   team_reward=np.asarray(team_reward, np.float32),
                   episode_return=np.zeros(n, np.float32), invalid=np.zeros(n, np.float32),
                   score=np.zeros(n, np.float32), parent_id=np.full(n, -1, np.int32))


def test_layout_puts_each_stage_reward_on_its_last_role_and_marks_episode_ends():
  # Episode 0: two steps of a sequential pair; episode 1 ends after one step. The team reward
  # of a stage arrives on every row of it; a parallel stage (roles 0 and 1 together,
  # last_of_stage = [0, 1]) must count it once.
  batch = _rows(episode=[0, 0, 0, 0, 1, 1], turn=[0, 0, 1, 1, 0, 0], role=[0, 1, 0, 1, 0, 1],
                team_reward=[0.0, 0.0, 0.5, 0.5, 1.0, 1.0])
  out = ppo.layout(batch, 2, 3, 2, np.asarray([0.0, 1.0]))
  want = np.zeros((2, 3, 2))
  want[0, 1, 1], want[1, 0, 1] = 0.5, 1.0
  np.testing.assert_array_equal(out["rewards"], want)
  np.testing.assert_array_equal(out["dones"], [[0, 1, 0], [1, 0, 0]])
  np.testing.assert_array_equal(out["mask"][:, :, 0], [[1, 1, 0], [1, 0, 0]])
  np.testing.assert_array_equal(ppo.scatter(np.arange(6.0), out["index"], (2, 3, 2))[0, 1],
                                [2.0, 3.0])


def test_explained_variance():
  g = np.array([1.0, 2.0, 3.0, 4.0])
  assert ppo.explained_variance(g, g, np.ones(4)) == 1.0
  assert abs(ppo.explained_variance(np.full(4, 2.5), g, np.ones(4))) < 1e-9
  # Masked to [1, 2] with predictions [2, 1]: residuals [-1, 1], 1 - 1 / 0.25.
  np.testing.assert_allclose(ppo.explained_variance(np.array([2.0, 1, 9, 9]), g,
                                                    np.array([1, 1, 0, 0])), -3.0)


@pytest.mark.parametrize("credit", ["action", "token"])
def test_actor_loss_against_numpy(credit):
  """MARFT-A: one ratio per action from its summed token log-probs; MARFT-T: per token."""
  model = build_model(get_model_config("tiny", num_layers=1))
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(4, 100, (3, 10)), jnp.int32)
  mask = np.zeros((3, 10), np.float32)
  mask[:, 5:9] = 1.0
  mask[2, 7:] = 0.0
  logits = np.asarray(model(tokens[:, :-1]), np.float64)
  logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
  logp = np.take_along_axis(logits, np.asarray(tokens)[:, 1:, None], -1)[..., 0] - logz
  probs = np.exp(logits - logz[..., None])
  entropy = -(probs * np.log(probs)).sum(-1)
  behavior = np.zeros((3, 10))
  behavior[:, 1:] = logp + rng.normal(0, 0.1, logp.shape)
  weight = np.array([1.0, 1.0, 0.0])  # row 2 is an untrained agent's
  m = mask[:, 1:] * weight[:, None]
  cfg = ml_collections.ConfigDict(dict(credit=credit, clip_eps=0.2, entropy_coef=0.01))
  if credit == "action":
    adv = np.array([1.0, -2.0, 3.0])
    ratio = np.exp(((logp - behavior[:, 1:]) * m).sum(1))
    rows = m.sum(1) > 0
    surrogate = -np.minimum(ratio * adv, np.clip(ratio, 0.8, 1.2) * adv)
    ent = (entropy * m).sum(1) / np.maximum(m.sum(1), 1)
    want = surrogate[rows].mean() - 0.01 * ent[rows].mean()
  else:
    adv = rng.normal(size=(3, 10))
    ratio = np.exp(logp - behavior[:, 1:])
    a = adv[:, 1:]
    surrogate = -np.minimum(ratio * a, np.clip(ratio, 0.8, 1.2) * a)
    want = (surrogate * m).sum() / m.sum() - 0.01 * (entropy * m).sum() / m.sum()
  batch = {"tokens": tokens, "loss_mask": jnp.asarray(mask),
           "behavior_logp": jnp.asarray(behavior, jnp.float32),
           "advantages": jnp.asarray(adv, jnp.float32), "row_weight": jnp.asarray(weight)}
  loss, _ = ppo.policy_loss(model, batch, cfg)
  np.testing.assert_allclose(loss, want, rtol=1e-4)
  count = ppo.loss_denominators(batch, cfg)["count"]
  assert float(count) == (2.0 if credit == "action" else m.sum())


def _config(tmp_path, cell, **overrides):
  from experiments.configs import marft_ppo
  from marft.models.hf import save_pretrained
  model_config = get_model_config("tiny", num_layers=1)
  if not (tmp_path / "hf").exists():
    save_pretrained(build_model(model_config), model_config, str(tmp_path / "hf"))
  config = marft_ppo.get_config(cell)
  config.model.path, config.model.tokenizer = str(tmp_path / "hf"), "char"
  config.task.num_tasks, config.task.eval_tasks, config.algo.k = 2, 2, 2
  config.task.env.max_turns = 2
  config.rollout.max_new_tokens = 4
  config.update_from_flattened_dict(overrides)
  return config


@pytest.mark.parametrize("cell", [
    "trio,token,per_agent,tiny", "trio,action,qmix,tiny",  # every critic path, both credits
    pytest.param("dual,action,shared,tiny", marks=pytest.mark.slow),
    pytest.param("dual,action,vdn,tiny", marks=pytest.mark.slow)])
def test_one_iteration_of_every_critic_trains_policies_and_critic(tmp_path, cell):
  config = _config(tmp_path, cell, **{"optimizer.lr": 1e-2, "algo.target_kl": 1e-9})
  job = ppo.build(config, sharding.make_mesh(data=1, fsdp=1, tensor=1))
  # A fresh critic predicts 0 and a random model earns no reward: random critic weights make
  # the advantages non-zero.
  noisy = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(1), x.shape),
                       job.state.extra["critic"])
  job = job._replace(state=job.state.replace(extra={**job.state.extra, "critic": noisy}))
  before = jax.tree.map(np.asarray, (job.state.params, job.state.extra["critic"]))
  batch, metrics = job.batch_fn(job.state)
  n = 3 if cell.startswith("trio") else 2
  assert batch["critic"]["obs"].shape == (4, 2, n, 128)  # [E = tasks * k, T, N, D]
  assert np.isfinite(metrics["train/explained_variance"])
  roles = ("reasoner", "actor", "verifier")[:n]
  assert all(f"train/advantage_abs/{r}" in metrics for r in roles)
  advantages, response = batch["policy"]["advantages"], batch["policy"]["loss_mask"] > 0
  if advantages.ndim == 3:  # MARFT-T: one advantage per response token, nothing elsewhere
    assert not advantages[~response].any() and advantages[response].any()
  # A random model earns no reward (targets 0 = a fresh critic's values): give the critic
  # something to learn.
  targets = batch["critic"]["targets"]
  batch["critic"]["targets"] = np.random.default_rng(0).normal(size=targets.shape)
  state, step = job.train_step(job.state, batch)
  assert np.asarray(step["finite"]).all() and np.isfinite(float(step["value_loss"]))
  assert float(step["critic_skipped"]) == 0
  # The first minibatch is on-policy (KL ~ 0), so a target_kl near 0 skips only the second.
  np.testing.assert_array_equal(np.asarray(step["update_skipped"]), 0.5)
  after = jax.tree.map(np.asarray, (state.params, state.extra["critic"]))
  for which in (0, 1):
    moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(after[which]),
                                                      jax.tree.leaves(before[which]))]
    assert any(moved), which


def test_agent_iteration_interval_trains_one_role_per_step(tmp_path):
  config = _config(tmp_path, "dual,action,shared,tiny",
                   **{"algo.agent_iteration_interval": 1, "optimizer.lr": 1e-2})
  job = ppo.build(config, sharding.make_mesh(data=1, fsdp=1, tensor=1))
  batch, _ = job.batch_fn(job.state)  # step 0: the reasoner (policy 0) only
  weights = batch["policy"]["row_weight"]
  assert weights[0].sum() > 0 and weights[1].sum() == 0
  before = jax.tree.map(np.asarray, job.state.params)
  state, _ = job.train_step(job.state, batch)
  delta = [np.abs(np.asarray(a) - b).reshape(2, -1).max(-1)
           for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(before))]
  assert max(d[0] for d in delta) > 0 and max(d[1] for d in delta) == 0  # Adam did not move it


@pytest.mark.parametrize("override, message", [
    ({"critic.kind": "mappo"}, "critic.kind='mappo'"),
    ({"critic.trunk": "shared"}, "critic.trunk='shared'"),
    ({"algo.credit": "turn"}, "algo.credit='turn'"),
    ({"critic.kind": "qmix", "algo.credit": "token"}, "one advantage per action"),
    ({"task.workflow": "quartet"}, "unknown workflow kind 'quartet'"),
    ({"algo.k": 0}, "algo.k=0"),
])
def test_bad_configs_are_one_error_before_anything_compiles(tmp_path, override, message):
  config = _config(tmp_path, "dual,action,shared,tiny", **override)
  with CompileCounter.delta() as delta, pytest.raises(common.ConfigError, match=message):
    ppo.build(config, sharding.make_mesh(data=1, fsdp=1, tensor=1))
  assert delta.count == 0


def test_a_model_without_hidden_states_is_a_config_error(tmp_path, monkeypatch):
  from experiments import rl
  config = _config(tmp_path, "dual,action,shared,tiny")
  real = rl.setup(config)
  monkeypatch.setattr(rl, "setup", lambda c: real._replace(model=object()))
  with pytest.raises(common.ConfigError, match="exposes no hidden states"):
    ppo.build(config, sharding.make_mesh(data=1, fsdp=1, tensor=1))


def test_unknown_profile_cell_is_an_error():
  from experiments.configs import marft_ppo
  with pytest.raises(ValueError, match="quartet"):
    marft_ppo.get_config("quartet,action,shared,tiny")


@pytest.mark.slow  # by default MAPoRL's resume test checks the job's extra state the same way
def test_resuming_gives_the_same_metrics(tmp_path):
  """Policies, critic and its optimizer state are all in the checkpoint: a run stopped after
  step 1 and resumed logs the uninterrupted run's step-2 metrics."""
  import json
  from marft import trainer
  mesh = sharding.make_mesh(data=1, fsdp=1, tensor=1)

  def run(workdir, total):
    config = _config(tmp_path, "dual,action,vdn,tiny", **{
        "total_steps": total, "eval_every": 0, "checkpoint_every": 1,
        "log.wandb_mode": "disabled", "optimizer.lr": 1e-3})
    trainer.run(config, str(workdir), ppo.build(config, mesh))
    records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    return [r for r in records if r.get("step") == total and "train/loss" in r][-1]

  straight = run(tmp_path / "straight", 2)
  run(tmp_path / "resumed", 1)
  resumed = run(tmp_path / "resumed", 2)
  for key in ("train/loss", "train/value_loss", "train/explained_variance",
              "rollout/episodic_return", "train/advantage_abs/actor"):
    assert resumed[key] == straight[key], key


def test_row_features_read_the_right_positions():
  """obs: the last prompt token; act: the last response token; tokens[j]: the state that
  predicts response token j (position prompt + j - 1); pooled: the mean over prompt and
  response, never the padding."""
  model = build_model(get_model_config("tiny", num_layers=1))
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(4, 100, (2, 12)), jnp.int32)
  prompt, response = np.array([3, 5]), np.array([4, 2])
  got = jax.tree.map(np.asarray, ppo.row_features(model, tokens, jnp.asarray(prompt),
                                                  jnp.asarray(response), response_width=3))
  hidden = np.asarray(model.hidden_states(tokens)[0])
  for r in range(2):
    p, m = prompt[r], response[r]
    np.testing.assert_allclose(got["obs"][r], hidden[r, p - 1], rtol=1e-6)
    np.testing.assert_allclose(got["act"][r], hidden[r, p + m - 1], rtol=1e-6)
    for j in range(3):
      np.testing.assert_allclose(got["tokens"][r, j], hidden[r, p - 1 + j], rtol=1e-6)
    np.testing.assert_allclose(got["pooled"][r], hidden[r, :p + m].mean(0), rtol=1e-5,
                               atol=1e-6)


def test_critic_warmup_steps_train_only_the_critic(tmp_path):
  config = _config(tmp_path, "dual,action,vdn,tiny",
                   **{"algo.critic_warmup_steps": 1, "optimizer.lr": 1e-2})
  job = ppo.build(config, sharding.make_mesh(data=1, fsdp=1, tensor=1))
  before = jax.tree.map(np.asarray, (job.state.params, job.state.extra["critic"]))
  batch, _ = job.batch_fn(job.state)
  batch["critic"]["targets"] = np.ones_like(batch["critic"]["targets"])
  state, metrics = job.train_step(job.state, batch)
  assert int(state.step) == 1 and "value_loss" in metrics and "loss" not in metrics
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(before[0])):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(state.extra["critic"]), jax.tree.leaves(before[1])))
  batch, _ = job.batch_fn(state)
  state, metrics = job.train_step(state, batch)  # step 1: past the warmup, the actors train
  assert "loss" in metrics and int(state.step) == 2
