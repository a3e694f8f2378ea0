"""The AgentPRM and InversePRM jobs against numbers computed here: Monte-Carlo step targets of a
scripted rollout by hand, InversePRM's transitions and loss (numpy, and its gradient through
both Q terms), the DPO pairs and loss (numpy), and both phases chained end to end on a random
tiny model (the real base model in a slow test)."""
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import agentprm as job
from experiments import common, prm
from experiments.configs import agentprm as agentprm_config
from marft import sharding, trainer
from marft.models.config import get_model_config
from marft.models.decoder import build_model
from marft.models.heads import ScoredLM
from marft.models.hf import save_pretrained
from marft.rollout.engine import RolloutConfig, collect
from marft.tokenizers import CharTokenizer
from tests.algorithms.prm.test_search import CyclingSampler
from tests.rollout.toy_workflow import GuessWorkflow

TOK = CharTokenizer()
EOS = [TOK.eos_id]
GAMMA = 0.9
# GuessWorkflow "3", two turns (tool then plan each), three independent copies; responses in
# request order: turn 0 tools 3 1 3, plans 3 2 1 (copy 0 solves it in 2 steps); turn 1 tools
# (copies 1, 2) 3 3, plans 3 2 (copy 1 solves it in 4 steps, copy 2 fails after 4).
SCRIPT = ["3", "1", "3", "3", "2", "1", "3", "3", "3", "2"]


def _rollout():
  return collect([GuessWorkflow({"target": "3"}, max_turns=2)],
                 [CyclingSampler(None, scripted=SCRIPT)], TOK, jax.random.key(0),
                 mapping={"tool": 0, "plan": 0}, config=RolloutConfig(k=3, tree=False))


def _step(prompt, response):
  return TOK.chat([{"role": "user", "content": prompt}]) + TOK.encode(response) + EOS


def test_prm_examples_targets_by_hand_on_a_scripted_rollout():
  episodes = job.rollout_episodes(_rollout())
  assert [e.success for e in episodes] == [True, True, False]
  assert [len(e.prompts) for e in episodes] == [2, 4, 4]
  steps, targets = job.step_examples(episodes, TOK, gamma=GAMMA)
  got = {tuple(s): float(t) for s, t in zip(steps, targets)}
  # Every visit of a step: (steps after it in its episode, the episode's success).
  visits = {("T0", "3"): [(1, 1), (3, 0)], ("T0", "1"): [(3, 1)],
            ("P03", "3"): [(0, 1)], ("P03", "1"): [(2, 0)], ("P01", "2"): [(2, 1)],
            ("T1", "3"): [(1, 1), (1, 0)], ("P13", "3"): [(0, 1)], ("P13", "2"): [(0, 0)]}
  want = {tuple(_step(*key)): (np.mean([GAMMA**k * (2 * s - 1) for k, s in v]) + 1) / 2
          for key, v in visits.items()}
  assert got.keys() == want.keys()  # one example per unique (prompt, response)
  for key in want:
    np.testing.assert_allclose(got[key], want[key], rtol=1e-6)
  # The repeated first state: (0.9 - 0.9^3) / 2 = 0.0855 -> 0.54275.
  np.testing.assert_allclose(got[tuple(_step("T0", "3"))], 0.54275, rtol=1e-6)


def test_shaped_prm_targets_by_hand_on_a_scripted_rollout():
  """Process reward shaping (Sec. 4) with the episodes' own Monte-Carlo state values, gamma 0.9:
  V(T0) = (0.9 + 0.729 - 0.729) / 3 = 0.3, V(P03) = (1 - 0.81) / 2 = 0.095, V(P01) = 0.81,
  V(T1) = V(P13) = 0; target = clip((Q + 0.9 V(s') - V(s) + 1) / 2, 0, 1), V = 0 after the end."""
  episodes = job.rollout_episodes(_rollout())
  steps, targets = job.step_examples(episodes, TOK, gamma=GAMMA, shaping=True)
  got = {tuple(s): float(t) for s, t in zip(steps, targets)}
  shaped = {("T0", "3"): 0.0855 + 0.9 * 0.095 - 0.3,  # both visits lead to P03
            ("T0", "1"): 0.729 + 0.9 * 0.81 - 0.3,  # 1.158: clipped to a target of 1
            ("P03", "3"): 1.0 + 0.0 - 0.095, ("P03", "1"): -0.81 + 0.0 - 0.095,
            ("P01", "2"): 0.81 + 0.0 - 0.81, ("T1", "3"): 0.0, ("P13", "3"): 1.0,
            ("P13", "2"): -1.0}
  want = {tuple(_step(*key)): min(max((v + 1) / 2, 0.0), 1.0) for key, v in shaped.items()}
  assert got.keys() == want.keys()
  for key in want:
    np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6)
  assert got[tuple(_step("T0", "1"))] == 1.0


def _transitions():
  calls = []

  def resample(prompts):
    calls.append([TOK.decode(p) for p in prompts])
    return [TOK.encode("7") + EOS for _ in prompts]

  expert = job.expert_episodes([GuessWorkflow({"target": "3"}, max_turns=2)], TOK)
  policy = job.rollout_episodes(_rollout())
  return expert, policy, job.inverse_transitions(expert, policy, resample), calls


def test_inverse_transitions_resample_the_experts_next_action_and_flag_terminals():
  expert, policy, data, calls = _transitions()
  assert len(expert) == 1 and expert[0].success
  assert expert[0].prompts == [TOK.chat([{"role": "user", "content": p}]) for p in ("T0", "P03")]
  assert calls == [["P03\n>"]]  # one call, at the expert's only non-terminal next state
  step = lambda i: data.steps[i]
  np.testing.assert_array_equal(data.expert, [True] * 2 + [False] * 10)
  np.testing.assert_array_equal(data.terminal, [0, 1] + [0, 1] + [0, 0, 0, 1] * 2)
  # Expert: (T0, 3) -> (P03, 7 re-sampled), label 1; (P03, 3) terminal.
  assert step(data.current[0]) == _step("T0", "3")
  assert step(data.following[0]) == _step("P03", "7")
  assert step(data.current[1]) == _step("P03", "3")
  # Policy: each step's next is the same episode's next step, its own action.
  policy_steps = [p + r for e in policy for p, r in zip(e.prompts, e.responses)]
  assert [step(i) for i in data.current[2:]] == policy_steps
  for t in range(2, 12):
    if not data.terminal[t]:
      assert step(data.following[t]) == step(data.current[t + 1])
  assert step(data.following[6]) == _step("P13", "3")  # copy 1's turn-1 tool -> its plan


def _scored_lm(seed=0):
  model = ScoredLM(build_model(get_model_config("tiny", num_layers=1), seed=seed),
                   rngs=nnx.Rngs(seed))
  kernel = model.head.out.kernel
  kernel[...] = 0.3 * jax.random.normal(jax.random.key(seed + 1), kernel[...].shape)
  return model


def test_inverse_loss_and_its_gradient_through_both_q_match_numpy():
  _, _, data, _ = _transitions()
  tokens, mask = prm.step_rows(data.steps, TOK.pad_id)
  rows = np.asarray([0, 1, 0, 1, 3, 5, 9, 11])  # 4 expert, then 4 policy (3 and 11 terminal)
  live = 1.0 - data.terminal[rows]
  batch = {"tokens": tokens[data.current[rows]], "mask": mask[data.current[rows]],
           "next_tokens": tokens[data.following[rows]],
           "next_mask": mask[data.following[rows]] * live[:, None],
           "terminal": data.terminal[rows]}
  model = _scored_lm()
  loss_fn = lambda m: job.inverse_batch_loss(m, jax.tree.map(jnp.asarray, batch), gamma=GAMMA)
  (loss, metrics), grads = nnx.jit(nnx.value_and_grad(loss_fn, has_aux=True))(model)

  z = np.asarray(model(jnp.asarray(tokens)), np.float64)
  last = mask.argmax(1)
  q = z[np.arange(len(z)), last]
  r = q[data.current[rows]] - GAMMA * live * q[data.following[rows]]
  softplus = lambda x: np.log1p(np.exp(x))
  want = 0.5 * softplus(-r[:4]).mean() + 0.5 * softplus(r[4:]).mean()
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["reward_expert"]), r[:4].mean(), rtol=1e-5,
                             atol=1e-6)
  # The head's output bias b shifts every Q alike: dr/db = 1 - gamma (1 - done) when the
  # gradient flows through Q(s', a') as well as Q(s, a) (through Q(s, a) alone it would be 1).
  sigmoid = lambda x: 1 / (1 + np.exp(-x))
  dr_db = 1 - GAMMA * live
  want_db = (0.5 * (-sigmoid(-r[:4]) * dr_db[:4]).mean()
             + 0.5 * (sigmoid(r[4:]) * dr_db[4:]).mean())
  np.testing.assert_allclose(float(grads.head.out.bias[...][0]), want_db, rtol=1e-4)


def test_dpo_rows_choose_the_higher_prm_score_and_drop_ties():
  prompts = [[5, 6], [7], [8, 9, 10]]
  responses = [([11, 2], [12, 13, 2]), ([14, 2], [15, 2]), ([16, 2], [17, 2])]
  scores = np.asarray([[0.1, 0.3], [0.5, -0.2], [0.4, 0.4]], np.float32)
  rows = job.dpo_rows(prompts, responses, scores, TOK.pad_id)
  np.testing.assert_array_equal(rows["weight"], [1, 1, 0])
  want = [[5, 6, 12, 13, 2], [7, 14, 2], [8, 9, 10, 16, 2],  # chosen: 1, 0, tie (first)
          [5, 6, 11, 2], [7, 15, 2], [8, 9, 10, 17, 2]]  # rejected
  for i, w in enumerate(want):
    assert rows["tokens"][i, :len(w)].tolist() == w
    assert (rows["tokens"][i, len(w):] == TOK.pad_id).all()
  np.testing.assert_array_equal(rows["response_mask"].sum(1), [3, 2, 2, 2, 2, 2])
  np.testing.assert_array_equal(rows["response_mask"].argmax(1), [2, 1, 3, 2, 1, 3])


def test_dpo_loss_on_a_hand_made_batch_matches_numpy():
  prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
  responses = [([20, 21, 2], [22, 2]), ([23, 2], [24, 25, 26, 2]), ([27, 2], [28, 2])]
  scores = np.asarray([[0.2, 0.1], [0.0, 0.6], [0.3, 0.3]], np.float32)
  rows = job.dpo_rows(prompts, responses, scores, TOK.pad_id)
  rows["ref_logp"] = np.asarray([-9.0, -8.0, -7.5, -10.0, -6.0, -7.0], np.float32)
  model = build_model(get_model_config("tiny", num_layers=1), seed=3)
  beta = 0.5
  loss, metrics = job.dpo_batch_loss(model, jax.tree.map(jnp.asarray, rows), beta=beta)

  logits = np.asarray(model(jnp.asarray(rows["tokens"][:, :-1])), np.float64)
  logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
  picked = np.take_along_axis(logits, rows["tokens"][:, 1:, None], -1)[..., 0] - logz
  logp = (picked * rows["response_mask"][:, 1:]).sum(1)
  ref = rows["ref_logp"]
  margin = beta * ((logp[:3] - ref[:3]) - (logp[3:] - ref[3:]))
  per_pair = np.log1p(np.exp(-margin))
  np.testing.assert_allclose(float(loss), per_pair[:2].mean(), rtol=1e-5)  # the tie is out
  np.testing.assert_allclose(float(metrics["reward_margin"]), margin[:2].mean(), rtol=1e-5)
  assert float(metrics["reward_accuracy"]) == (margin[:2] > 0).mean()
  assert float(metrics["pairs"]) == 2


@pytest.mark.parametrize("cell,key,value,message", [
    ("agentprm,tiny", "prm.method", "oracle", "prm.method='oracle'"),
    ("inverse,tiny", "prm.batch_size", 63, "must be even"),
    ("agentprm,tiny", "prm.rollouts", 0, "prm.rollouts=0"),
    ("agentprm,tiny", "prm.gamma", 1.5, "a discount in"),
    ("agentprm,tiny", "policies.mapping", {"tool": 0, "plan": 1}, "one policy shared"),
    ("policy,tiny", "prm.path", "", "prm.path is empty"),
    ("policy,tiny", "algo.beta", 0.0, "algo.beta=0.0"),
    ("policy,tiny", "algo.best_of_n", -1, "algo.best_of_n=-1"),
    ("policy,tiny", "algo.states_per_step", 0, "algo.states_per_step=0"),
    ("policy,tiny", "algo.best_of_n_temperature", -0.3, "algo.best_of_n_temperature=-0.3"),
])
def test_bad_config_values_are_one_config_error(cell, key, value, message):
  config = agentprm_config.get_config(cell)
  if cell.startswith("policy") and key != "prm.path":
    config.prm.path = "somewhere"
  parent, _, name = key.rpartition(".")
  config[parent][name] = value
  with pytest.raises(common.ConfigError, match=message):
    job.check_config(config)


def test_a_missing_prm_is_one_config_error(tmp_path):
  config = agentprm_config.get_config("policy,tiny")
  config.prm.path = str(tmp_path / "nothing")
  with pytest.raises(common.ConfigError, match="holds no PRM"):
    job.build(config, None)


def test_config_cells():
  for cell, name, method in [("agentprm,tiny", "agentprm", "agentprm"),
                             ("inverse,paper", "agentprm", "inverse")]:
    config = agentprm_config.get_config(cell)
    assert (config.algo.name, config.prm.method) == (name, method)
    common.validate(config)
  config = agentprm_config.get_config("policy,tiny")
  assert config.algo.name == "agentprm_policy" and config.algo.beta == 0.03
  assert dict(config.policies.mapping) == {"tool": 0, "plan": 0}
  for cell in ("policy", "policy,huge", "critic,tiny", "agentprm,tiny,1"):
    with pytest.raises(ValueError, match="config cell"):
      agentprm_config.get_config(cell)


def _shrink(config, phase):
  config.total_steps, config.eval_every, config.checkpoint_every = 2, 2, 2
  config.log.wandb_mode = "disabled"
  config.task.env.max_turns = 2
  config.rollout.max_new_tokens = 4
  if phase == "policy":
    config.task.num_tasks, config.task.eval_tasks = 2, 2
    config.algo.states_per_step, config.algo.best_of_n = 4, 2
  else:
    config.prm.questions, config.prm.rollouts, config.prm.batch_size = 2, 2, 4
    config.prm.eval_questions, config.prm.eval_samples = 2, 1
  return config


def _run(config, workdir):
  trainer.run(config, str(workdir),
              job.build(config, sharding.make_mesh(data=1, fsdp=1, tensor=1)))
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _merged(records):
  out = {}
  for record in records:
    out.setdefault(record["step"], {}).update(record)
  return out


def test_phases_chain_on_a_random_tiny_model(tmp_path):
  """PRM phase (AgentPRM) -> policy phase on its PRM -> InversePRM from the policy's export,
  two steps each: exports land where the next phase reads them, and the first DPO step's loss
  is log 2 (the policy starts as the reference)."""
  model_config = get_model_config("tiny", num_layers=1)
  save_pretrained(build_model(model_config, seed=0), model_config, str(tmp_path / "base"))

  def phase(cell, model_path, workdir, **prm_keys):
    config = _shrink(agentprm_config.get_config(cell), cell.split(",")[0])
    config.model.path, config.model.tokenizer = str(model_path), "char"
    for key, value in prm_keys.items():
      config.prm[key] = value
    return _merged(_run(config, tmp_path / workdir))

  prm_run = phase("agentprm,tiny", tmp_path / "base", "prm")
  assert os.path.exists(tmp_path / "prm" / "hf_prm" / "score_head" / "head.json")
  assert prm_run[2]["data/examples"] > 0 and prm_run[2]["eval/examples"] == 2
  assert "eval/auc" in prm_run[0]  # NaN here: a random policy fails every test task
  assert math.isfinite(prm_run[2]["train/loss"])

  policy_run = phase("policy,tiny", tmp_path / "base", "policy",
                     path=str(tmp_path / "prm" / "hf_prm"))
  assert os.path.exists(tmp_path / "policy" / "hf_policy0" / "config.json")
  assert policy_run[1]["train/pairs"] > 0
  np.testing.assert_allclose(policy_run[1]["train/loss"], math.log(2.0), rtol=1e-4)
  assert 0.0 <= policy_run[2]["eval/best_of_n_success"] <= 1.0
  assert policy_run[2]["eval/best_of_n_samples"] > 0
  assert "eval/greedy_success" in policy_run[0]

  inverse_run = phase("inverse,tiny", tmp_path / "policy" / "hf_policy0", "inverse")
  assert os.path.exists(tmp_path / "inverse" / "hf_prm" / "config.json")
  assert inverse_run[2]["data/expert_transitions"] > 0
  assert math.isfinite(inverse_run[2]["train/loss"])


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["agentprm,tiny", "inverse,tiny"])
def test_prm_phase_on_the_real_tiny_base(tmp_path, cell):
  """The tiny cells as configured (the task's pretrained base, built on first use), shortened
  to 2 steps of smaller data: the base solves some tasks, so targets span both outcomes."""
  config = agentprm_config.get_config(cell)
  config.total_steps, config.eval_every, config.checkpoint_every = 2, 2, 2
  config.log.wandb_mode = "disabled"
  config.prm.questions, config.prm.eval_questions = 16, 32
  records = _merged(_run(config, tmp_path / "run"))
  assert math.isfinite(records[2]["train/loss"]) and 0.0 <= records[2]["eval/auc"] <= 1.0
  assert 0.0 < records[2]["data/success_rate"] < 1.0
