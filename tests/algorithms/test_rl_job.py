"""Pieces of the AT-GRPO job: per-policy batches and the policy loss on a real model."""
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from experiments import rl
from marft.logprobs import next_token_logprobs
from marft.models.config import get_model_config
from marft.models.decoder import build_model
from marft.policies import policy_params, stack_policies


def test_policy_batches_route_rows_and_pad_with_zero_weight():
  rows = {"x": np.arange(5, dtype=np.float32), "row_weight": np.ones(5, np.float32)}
  out = rl.policy_batches(rows, np.array([1, 0, 1, 1, 0]), num_policies=2)
  assert out["x"].shape == (2, 16)
  np.testing.assert_array_equal(out["x"][0, :2], [1, 4])
  np.testing.assert_array_equal(out["x"][1, :3], [0, 2, 3])
  np.testing.assert_array_equal(out["row_weight"].sum(-1), [2, 3])  # padding carries no weight
  big = rl.policy_batches({"x": np.zeros(70)}, np.zeros(70, int), 1)
  assert big["x"].shape == (1, 96)
  # Shuffled: each policy's rows (padding included) in a random order, none lost or mixed.
  rows = {"x": np.arange(1, 6, dtype=np.float32), "row_weight": np.ones(5, np.float32)}
  mixed = rl.policy_batches(rows, np.array([1, 0, 1, 1, 0]), 2, np.random.default_rng(0))
  assert sorted(mixed["x"][0][mixed["x"][0] > 0]) == [2, 5]
  assert sorted(mixed["x"][1][mixed["x"][1] > 0]) == [1, 3, 4]
  assert (mixed["row_weight"] == (mixed["x"] > 0)).all()  # each row keeps its own weight
  assert list(mixed["x"][1][:3]) != [1, 3, 4]


def test_on_policy_loss_is_minus_token_mean_advantage_and_its_gradient_is_reinforce():
  model = build_model(get_model_config("tiny", num_layers=1))
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(4, 100, (3, 10)), jnp.int32)
  mask = np.zeros((3, 10), np.float32)
  mask[:, 6:9] = 1.0
  logp = np.asarray(next_token_logprobs(model, tokens))
  behavior = np.zeros((3, 10), np.float32)
  behavior[:, 1:] = logp  # on-policy: the ratio is exactly 1
  advantages = np.array([1.0, -0.5, 2.0], np.float32)
  batch = {"tokens": tokens, "loss_mask": jnp.asarray(mask), "behavior_logp": jnp.asarray(behavior),
           "advantages": jnp.asarray(advantages), "row_weight": jnp.ones(3)}
  cfg = ml_collections.ConfigDict(dict(clip_eps=0.2, dual_clip=3.0, aggregation="token-mean",
                                       kl_coef=0.0))
  loss, metrics = nnx.jit(lambda m, b: rl.loss(m, b, cfg))(model, batch)
  np.testing.assert_allclose(loss, -(advantages[:, None] * mask[:, 1:]).sum() / mask.sum(),
                             rtol=1e-5)
  assert float(metrics["clip_frac"]) == 0.0 and abs(float(metrics["approx_kl"])) < 1e-6
  # At ratio 1 the gradient equals that of -sum(A * logp * m) / sum(m) (REINFORCE).
  graphdef, state = nnx.split(model)
  grad = jax.jit(jax.grad(lambda s: rl.loss(nnx.merge(graphdef, s), batch, cfg)[0]))(state)
  reinforce = jax.jit(jax.grad(lambda s: -(jnp.asarray(advantages)[:, None] * next_token_logprobs(
      nnx.merge(graphdef, s), tokens) * mask[:, 1:]).sum() / mask.sum()))(state)
  for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(reinforce)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def _numpy_rl_loss(logp, old, ref, adv, mask, eps, c, beta):
  """The GRPO loss with a k3 KL penalty, written out in numpy (token-mean aggregation)."""
  ratio = np.exp(logp - old)
  a = np.broadcast_to(adv[:, None], logp.shape)
  unclipped, clipped = ratio * a, np.clip(ratio, 1 - eps, 1 + eps) * a
  per_token = -np.minimum(unclipped, clipped)
  per_token = np.where(a < 0, np.minimum(per_token, -c * a), per_token)
  kl = np.exp(ref - logp) - (ref - logp) - 1
  mean = lambda v: (v * mask).sum() / mask.sum()
  return {"loss": mean(per_token) + beta * mean(kl), "kl": mean(kl),
          "clip_frac": mean(clipped < unclipped), "approx_kl": mean(old - logp)}


def test_off_policy_loss_with_kl_and_row_weights_matches_numpy():
  model = build_model(get_model_config("tiny", num_layers=1))
  rng = np.random.default_rng(1)
  tokens = jnp.asarray(rng.integers(4, 100, (4, 12)), jnp.int32)
  mask = np.zeros((4, 12), np.float32)
  mask[:, 5:11] = 1.0
  mask[3, 9:] = 0.0  # a shorter response
  logp = np.asarray(next_token_logprobs(model, tokens), np.float64)
  # Behaviour log-probs away from the current policy: ratios from ~0.3 to ~4 (both clip sides
  # and, for A < 0, the dual clip at c = 3), and a reference policy for the KL penalty.
  behavior, ref = np.zeros((4, 12)), np.zeros((4, 12))
  behavior[:, 1:] = logp + rng.normal(0, 0.6, logp.shape)
  behavior[0, 6] = logp[0, 5] - np.log(4.0)  # ratio 4 on a response token of an A < 0 row
  ref[:, 1:] = logp + rng.normal(0, 0.4, logp.shape)
  advantages = np.array([-1.5, 0.7, 5.0, 1.2])
  weight = np.array([1.0, 1.0, 0.0, 1.0])  # row 2 (a filtered group) must not count
  batch = {"tokens": tokens, "loss_mask": jnp.asarray(mask),
           "behavior_logp": jnp.asarray(behavior, jnp.float32),
           "ref_logp": jnp.asarray(ref, jnp.float32),
           "advantages": jnp.asarray(advantages, jnp.float32),
           "row_weight": jnp.asarray(weight, jnp.float32)}
  cfg = ml_collections.ConfigDict(dict(clip_eps=0.1, dual_clip=3.0, aggregation="token-mean",
                                       kl_coef=0.3))
  loss, metrics = rl.loss(model, batch, cfg)
  m = mask[:, 1:] * weight[:, None]
  want = _numpy_rl_loss(logp, behavior[:, 1:], ref[:, 1:], advantages, m, 0.1, 3.0, 0.3)
  ratio = np.exp(logp - behavior[:, 1:])[m > 0]
  assert ratio.min() < 0.9 and ratio.max() > 3.0 and 0 < want["clip_frac"] < 1
  np.testing.assert_allclose(loss, want["loss"], rtol=1e-5)
  for name in ("kl", "clip_frac", "approx_kl"):
    np.testing.assert_allclose(metrics[name], want[name], rtol=1e-5, atol=1e-7, err_msg=name)
  # Row 2 carries no weight: changing anything in it changes nothing.
  other = dict(batch, advantages=batch["advantages"].at[2].set(-50.0),
               behavior_logp=batch["behavior_logp"].at[2].add(3.0))
  np.testing.assert_allclose(rl.loss(model, other, cfg)[0], loss, rtol=1e-6)


def _job_config(tmp_path, regime, model=None, **algo):
  from experiments.configs import at_grpo
  from marft.models.hf import save_pretrained
  model_config = get_model_config("tiny", num_layers=1) if model is None else model.config
  save_pretrained(model or build_model(model_config), model_config, str(tmp_path / "hf"))
  config = at_grpo.get_config(f"plan_path,{regime},tiny")
  config.model.path, config.model.tokenizer = str(tmp_path / "hf"), "char"
  config.task.num_tasks, config.task.eval_tasks, config.algo.k = 2, 2, 2
  config.task.env.max_turns = 2
  config.algo.update(algo)
  return config


def test_lora_per_role_job_trains_only_each_roles_adapters(tmp_path):
  from marft import sharding
  config = _job_config(tmp_path, "mas_lora_per_role", kl_coef=0.01, drop_zero_variance=False)
  config.optimizer.lr = 1e-2
  job = rl.build(config, sharding.make_mesh(data=1, fsdp=1, tensor=1))
  before = jax.tree.map(np.asarray, job.state.params)
  batch, metrics = job.batch_fn(job.state)
  assert batch["ref_logp"].shape == batch["behavior_logp"].shape  # KL to the frozen start
  state, step_metrics = job.train_step(job.state, batch)
  assert np.isfinite(np.asarray(step_metrics["loss"])).all()
  trained = jax.tree.leaves(state.params)
  assert trained and all(leaf.shape[0] == 2 for leaf in trained)  # only [P, ...] adapters
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(before)]
  assert all("['lora_a']" in p or "['lora_b']" in p for p in paths), paths[:3]
  changed = [np.abs(np.asarray(a) - b).reshape(2, -1).max(-1)
             for a, b in zip(trained, jax.tree.leaves(before))]
  assert (np.max(changed, axis=0) > 0).all()  # both role adapters were updated
  evals = job.eval_fn(state)
  assert {"eval/greedy_success", "eval/swapped/greedy_success",
          "eval/sampled_success"} <= set(evals)


def test_sampled_continuation_minibatched_run_exports_its_policy(tmp_path):
  from marft import sharding, trainer
  from marft.models.hf import load_pretrained
  config = _job_config(tmp_path, "mas_shared", continuation="sampled", minibatches=2)
  config.total_steps, config.eval_every, config.log.wandb_mode = 1, 0, "disabled"
  job = rl.build(config, sharding.make_mesh(data=1, fsdp=1, tensor=1))
  state = trainer.run(config, str(tmp_path / "run"), job)
  assert int(state.step) == 1 and int(np.asarray(state.skipped_steps).sum()) == 0
  exported, _ = load_pretrained(str(tmp_path / "run" / "hf_policy0"))
  start, _ = load_pretrained(str(tmp_path / "hf"))
  tokens = jnp.asarray([[1, 40, 41, 42, 43]], jnp.int32)
  graphdef, _, _ = stack_policies(start, 1)
  trained = nnx.merge(graphdef, policy_params(state.params, 0))
  np.testing.assert_allclose(exported(tokens), trained(tokens), atol=1e-5)
  assert np.abs(np.asarray(exported(tokens) - start(tokens))).max() > 0  # it did train


def test_evaluation_views():
  config = ml_collections.ConfigDict(dict(
      task=dict(workflow="mas"), policies=dict(mapping=dict(tool=0, plan=1)),
      eval=dict(other_workflow="single", swap_roles=True)))
  roles = {"mas": ("tool", "plan"), "single": ("agent",)}.__getitem__
  assert rl.evaluation_views(config, roles) == {
      "": ("mas", {"tool": 0, "plan": 1}), "single/": ("single", {"agent": 0}),
      "swapped/": ("mas", {"tool": 1, "plan": 0})}
  config.eval = dict(other_workflow="", swap_roles=False)
  assert rl.evaluation_views(config, roles) == {"": ("mas", {"tool": 0, "plan": 1})}


def test_every_table_config_validates():
  from experiments import common
  from experiments.configs import at_grpo
  for task in at_grpo.ROLES:
    for regime in at_grpo.REGIMES:
      for scale in at_grpo.SCALES:
        config = at_grpo.get_config(f"{task},{regime},{scale}")
        common.validate(config)
        assert config.model.name == {"tiny": "tiny", "small": "small"}.get(scale, "qwen3-1.7b")
        policies = set(config.policies.mapping.values())
        assert policies == ({0} if regime in ("single_grpo", "mas_shared") else {0, 1})
        assert (config.policies.lora_rank > 0) == (regime == "mas_lora_per_role")
  with pytest.raises(ValueError, match="expected <task>"):
    at_grpo.get_config("plan_path,shared,tiny")


@pytest.mark.parametrize("change, message", [
    (dict(mapping={"tool": 0}), "must name exactly the roles"),
    (dict(k=1), "algo.k=1"),
    (dict(workflow="debate"), "debate"),
    (dict(continuation="greedy"), "algo.continuation"),
    (dict(minibatches=3), "algo.minibatches=3"),
])
def test_bad_rl_configs_are_config_errors(tmp_path, change, message):
  from experiments import common
  from marft import sharding
  config = _job_config(tmp_path, "mas_shared")
  if "mapping" in change:
    config.policies.mapping = change["mapping"]
  if "k" in change:
    config.algo.k = change["k"]
  if "workflow" in change:
    config.task.workflow = change["workflow"]
  for key in ("continuation", "minibatches"):
    if key in change:
      config.algo[key] = change[key]
  with pytest.raises(common.ConfigError, match=message):
    rl.build(config, sharding.make_mesh(data=1, fsdp=1, tensor=1))


def test_each_base_model_shape_has_its_own_pretrained_base():
  from experiments import common, pretrain
  from experiments.configs import at_grpo
  tiny = rl.base_model_path(at_grpo.get_config("plan_path,mas_shared,tiny"))
  small = rl.base_model_path(at_grpo.get_config("plan_path,mas_shared,small"))
  assert tiny != small
  assert small == os.path.join(pretrain.base_model_dir(pretrain.config_for("plan_path", "small")),
                               "hf")
  assert pretrain.base_checkpoint(pretrain.config_for("plan_path", "small")) == small
  assert pretrain.config_for("plan_path", "small").model.name == "small"
  config = at_grpo.get_config("plan_path,mas_shared,tiny")
  config.model.name = "qwen2.5-0.5b"
  with pytest.raises(common.ConfigError, match="needs model.path"):
    rl.base_model_path(config)
  config.model.path = "/ckpt/qwen"
  assert rl.base_model_path(config) == "/ckpt/qwen"


def test_at_grpo_batch_of_a_hand_built_rollout(tmp_path, monkeypatch):
  """`batch_fn` on a rollout written out by hand: AT-GRPO groups are (task, role, turn)
  (Stronger Together, Sec. 4.2), the reward is `alpha * team + local`, groups whose mixed
  rewards are all equal get weight 0, and policy p receives exactly its roles' rows."""
  from marft import sharding
  from marft.rollout.batch import TurnBatch
  from marft.rollout.engine import Rollout
  alpha = 0.5
  config = _job_config(tmp_path, "mas_per_role", alpha=alpha, drop_zero_variance=True)
  assert dict(config.policies.mapping) == {"tool": 0, "plan": 1}
  # (task, role, turn, local reward, team reward); two candidates per (task, role, turn), rows
  # in a scrambled order. Groups (mixed rewards alpha * team + local):
  #   (0, 0, 0): 1.0, 0.0         (0, 1, 0): 1.0, 1.0 (local 1.0, 0.5; team 0, 1: zero variance)
  #   (0, 0, 1): 0.5, 1.0 (equal local, the team reward decides)
  #   (0, 1, 1): 2.0, 0.0, 1.0    (1, 0, 0): 0.0, 0.0 (zero variance)
  #   (1, 1, 0): -1.0, 1.0
  table = [(0, 0, 0, 1.0, 0.0), (0, 1, 0, 1.0, 0.0), (1, 0, 0, 0.0, 0.0), (0, 1, 1, 2.0, 0.0),
           (0, 0, 1, 0.0, 1.0), (1, 1, 0, -1.0, 0.0), (0, 0, 0, 0.0, 0.0), (0, 1, 0, 0.5, 1.0),
           (0, 0, 1, 0.0, 2.0), (0, 1, 1, 0.0, 0.0), (1, 0, 0, 0.0, 0.0), (1, 1, 0, 1.0, 0.0),
           (0, 1, 1, 1.0, 0.0)]
  task, role, turn = (np.array([r[i] for r in table], np.int32) for i in range(3))
  local, team = (np.array([r[i] for r in table], np.float32) for i in (3, 4))
  n, width = len(table), 12
  tokens = np.zeros((n, width), np.int32)
  tokens[:, 0], tokens[:, 1], tokens[:, 2:] = 1, 20 + np.arange(n), 5  # token 1 names the row
  loss_mask = np.zeros((n, width), np.float32)
  loss_mask[:, 6:9] = 1.0
  behavior = -0.1 * loss_mask * (1 + np.arange(n))[:, None]
  rollout = TurnBatch(tokens=tokens, loss_mask=loss_mask, behavior_logp=behavior,
                      policy_id=role.copy(), role_id=role, turn_id=turn,
                      episode_id=task * 2, task_id=task, branch_id=np.zeros(n, np.int32),
                      reward=local, team_reward=team, episode_return=team,
                      invalid=np.zeros(n, np.float32), score=np.zeros(n, np.float32),
                      parent_id=np.full(n, -1, np.int32))
  monkeypatch.setattr(rl, "collect", lambda *a, **k: Rollout(rollout, [], {
      "rollout/success_rate": 0.25, "other": 1.0}))
  job = rl.build(config, sharding.make_mesh(data=1, fsdp=1, tensor=1))
  batch, metrics = job.batch_fn(job.state)

  # Expected, by hand: each group's advantage (r - mean) / (std_ddof1 + eps).
  mixed = alpha * team + local
  expected_adv, expected_weight = np.zeros(n), np.zeros(n)
  for key in set(zip(task, role, turn)):
    members = np.flatnonzero((task == key[0]) & (role == key[1]) & (turn == key[2]))
    r = mixed[members].astype(np.float64)
    expected_adv[members] = (r - r.mean()) / (r.std(ddof=1) + 1e-6)
    expected_weight[members] = float(r.max() > r.min())
  # Spot values: group (0, 0, 0) is [1, 0] -> +-1/sqrt(2); (0, 1, 1) is [2, 0, 1] -> [1, -1, 0].
  np.testing.assert_allclose(expected_adv[[0, 6]], [0.5**0.5, -0.5**0.5], rtol=1e-5)
  np.testing.assert_allclose(expected_adv[[3, 9, 12]], [1.0, -1.0, 0.0], atol=1e-5)
  np.testing.assert_array_equal(expected_weight[[1, 7, 2, 10]], 0.0)
  np.testing.assert_array_equal(expected_weight[[4, 8]], 1.0)

  assert batch["tokens"].shape[:2] == (2, 16)
  for p in range(2):
    real = batch["tokens"][p, :, 0] == 1
    rows = batch["tokens"][p, real, 1] - 20
    assert sorted(rows) == list(np.flatnonzero(role == p))  # exactly its roles' rows
    np.testing.assert_allclose(batch["advantages"][p, real], expected_adv[rows], atol=1e-5)
    np.testing.assert_array_equal(batch["row_weight"][p, real], expected_weight[rows])
    np.testing.assert_array_equal(batch["row_weight"][p, ~real], 0.0)
    np.testing.assert_array_equal(batch["behavior_logp"][p, real], behavior[rows])
    np.testing.assert_array_equal(batch["loss_mask"][p, real], loss_mask[rows])
  assert metrics["rollout/kept_rows"] == expected_weight.sum() == 9
  np.testing.assert_allclose(metrics["train/advantage_abs"],
                             np.abs(expected_adv * expected_weight).sum() / 9, rtol=1e-5)
  assert metrics["rollout/success_rate"] == 0.25 and "other" not in metrics


def test_step_zero_is_on_policy_on_real_rollout_rows(tmp_path):
  """At step 0 the training forward (the fused projections at >= 256 rows) reproduces the
  sampler's behaviour log-probs (KV-cache decoding, token by token): the ratio is 1 on every
  response token, so approx_kl and clip_frac are 0. A Qwen2-shaped model with random QKV
  biases exercises the fused bias path."""
  from marft import sharding
  from marft.models.decoder import _FUSE_MIN_ROWS
  from marft.models.hf import load_pretrained
  model_config = get_model_config("tiny", num_layers=1, model_type="qwen2", qkv_bias=True)
  model = build_model(model_config, seed=1)
  key = jax.random.key(2)
  for proj in (model.layers[0].attn.q_proj, model.layers[0].attn.k_proj,
               model.layers[0].attn.v_proj):
    key, sub = jax.random.split(key)
    proj.bias[...] = jax.random.normal(sub, proj.bias[...].shape)
  config = _job_config(tmp_path, "mas_per_role", model=model, drop_zero_variance=False)
  job = rl.build(config, sharding.make_mesh(data=1, fsdp=1, tensor=1))
  batch, _ = job.batch_fn(job.state)
  policies, rows, width = batch["tokens"].shape
  assert policies == 2 and rows * (width - 1) >= _FUSE_MIN_ROWS
  start, _ = load_pretrained(str(tmp_path / "hf"))  # every policy equals it at step 0
  for p in range(2):
    mask = batch["loss_mask"][p][:, 1:] > 0
    assert mask.sum() > 0
    logp = np.asarray(next_token_logprobs(start, jnp.asarray(batch["tokens"][p])))
    np.testing.assert_allclose(logp[mask], batch["behavior_logp"][p][:, 1:][mask], atol=2e-5)
    # The job's loss on policy p's rows (what the train step logs at step 0).
    _, metrics = rl.loss(start, jax.tree.map(lambda x: jnp.asarray(x[p]), batch), config.algo)
    assert abs(float(metrics["approx_kl"])) < 1e-6
    assert float(metrics["clip_frac"]) == 0.0


def test_one_update_moves_each_response_toward_its_advantage(tmp_path):
  """The default-run variant of the AT-GRPO gain (`tests/test_at_grpo_e2e.py`, slow): one
  update of the job's train step on its own rollout rows raises the log-probability of the
  responses given a positive advantage and lowers those given a negative one (mutation: a
  flipped surrogate or advantage sign, advantages meeting the wrong rows). A random model's
  answers all earn the same reward, so the advantages here are +-1 drawn per row."""
  from marft import sharding
  config = _job_config(tmp_path, "mas_shared", drop_zero_variance=False)
  config.task.num_tasks, config.algo.k = 4, 4
  config.optimizer.lr = 3e-3
  job = rl.build(config, sharding.make_mesh(data=1, fsdp=1, tensor=1))
  batch, _ = job.batch_fn(job.state)
  real = batch["loss_mask"][0].sum(-1) > 0
  advantages = np.where(real, np.random.default_rng(0).choice([-1.0, 1.0], real.size), 0.0)
  batch = dict(batch, advantages=advantages[None].astype(np.float32),
               row_weight=real[None].astype(np.float32))
  graphdef, _, _ = stack_policies(build_model(get_model_config("tiny", num_layers=1)), 1)
  tokens = jnp.asarray(batch["tokens"][0])
  mask = batch["loss_mask"][0][:, 1:]

  def response_logp(params):
    logp = np.asarray(next_token_logprobs(nnx.merge(graphdef, policy_params(params, 0)), tokens))
    return (logp * mask).sum(-1) / np.maximum(mask.sum(-1), 1)

  before = response_logp(job.state.params)  # the train step donates the state's buffers
  state, _ = job.train_step(job.state, batch)
  change = response_logp(state.params) - before
  up, down = advantages > 0, advantages < 0
  assert up.sum() >= 8 and down.sum() >= 8
  assert change[up].mean() > 0 > change[down].mean()
  assert (change[up] > 0).mean() > 0.8 and (change[down] < 0).mean() > 0.8


def test_prm_step_values_read_each_rows_prompt_and_response():
  import types
  tokens = np.array([[5, 6, 7, 8, 0, 0], [9, 10, 11, 12, 13, 0]], np.int32)
  mask = np.array([[0, 0, 1, 1, 0, 0], [0, 1, 1, 1, 1, 0]], np.float32)
  seen = []

  def scorer(sequences):
    seen.extend(sequences)
    return np.array([len(s) for s in sequences], np.float32)

  values = rl.prm_step_values(scorer, types.SimpleNamespace(tokens=tokens, loss_mask=mask))
  assert seen == [[5, 6, 7, 8], [9, 10, 11, 12, 13]]  # one call, padding left out
  np.testing.assert_array_equal(values, [4.0, 5.0])


def test_prm_as_dense_reward_adds_its_step_values_to_the_local_reward(tmp_path):
  """AgentPRM's PRM as a dense reward in the AT-GRPO job: the credit sees r + c Q_PRM(s, a),
  Q_PRM = 2 sigmoid(z) - 1 of the PRM's logit at each row's last response token, computed here
  from the rows' tokens with the PRM loaded independently."""
  from marft import sharding
  from marft.models.heads import ScoredLM
  from marft.models.hf import load_scored_lm, save_scored_lm
  model_config = get_model_config("tiny", num_layers=1)
  prm_model = ScoredLM(build_model(model_config, seed=3), rngs=nnx.Rngs(1))
  kernel = prm_model.head.out.kernel
  kernel[...] = jax.random.normal(jax.random.key(2), kernel[...].shape)
  save_scored_lm(prm_model, model_config, str(tmp_path / "prm"))
  seen = {}

  def recording(name):
    def credit(batch, algo):
      seen[name] = batch
      return rl.at_grpo_credit(batch, algo)
    return credit

  mesh = sharding.make_mesh(data=1, fsdp=1, tensor=1)
  plain = _job_config(tmp_path, "mas_shared")
  job = rl.build(plain, mesh, credit=recording("plain"))
  job.batch_fn(job.state)
  dense = _job_config(tmp_path, "mas_shared", prm_path=str(tmp_path / "prm"), prm_coef=0.5)
  job = rl.build(dense, mesh, credit=recording("dense"))
  _, metrics = job.batch_fn(job.state)
  a, b = seen["plain"], seen["dense"]
  np.testing.assert_array_equal(a.tokens, b.tokens)  # the same rollout
  loaded, _ = load_scored_lm(str(tmp_path / "prm"))
  z = np.asarray(loaded(jnp.asarray(a.tokens)))
  last = a.loss_mask.shape[1] - 1 - np.argmax(a.loss_mask[:, ::-1], axis=1)
  q = 2.0 / (1.0 + np.exp(-z[np.arange(len(z)), last])) - 1.0
  assert np.std(q) > 1e-3
  np.testing.assert_allclose(b.reward, a.reward + 0.5 * q, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(metrics["train/prm_value"], q.mean(), rtol=1e-4, atol=1e-6)
  for algo in ({"prm_path": str(tmp_path / "prm")}, {"prm_coef": 1.0},
               {"prm_path": str(tmp_path / "none"), "prm_coef": 1.0}):
    with pytest.raises(Exception, match="algo.prm_"):
      rl.build(_job_config(tmp_path, "mas_shared", **algo), mesh)
