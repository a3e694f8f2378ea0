"""The `paper` scale on CPU: a real architecture's layer shapes (Qwen2.5-0.5B's, with one layer),
a BPE `tokenizer.json` with the ChatML template built here, and `chat` prompts, through the
AT-GRPO job: prompt, chat template, generation, parsing, reward and one update of every task.
Bad input (an unsupported architecture, a tokenizer without a chat template, a prompt style the
task lacks, chat prompts for the character tokenizer) is one clear error before anything
compiles.

The default run trains Plan-Path; `pytest -m slow tests/test_paper_scale.py` every task, and
one iteration of MARFT's PPO on the dual profile (the chat prompts of the dual and trio
workflows are checked by default in `tests/envs/test_math_sequential.py`).
"""
import json

import numpy as np
import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from envs.registry import get_task
from experiments import common, rl
from experiments.configs import at_grpo
from marft import sharding, trainer
from marft.compiles import CompileCounter
from marft.models.config import get_model_config
from marft.models.decoder import build_model
from marft.models.hf import save_pretrained

TASKS = ("plan_path", "sokoban", "sudoku", "math", "code")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen2.5's template, as far as it matters here: the markers of its turns.
CHAT_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n" \
                "{% endfor %}<|im_start|>assistant\n"


def _corpus():
  for name in TASKS:
    task = get_task(name)
    cfg = {**task.default_config(), **at_grpo.PAPER_TASKS[name]["env"]}
    for seed in range(3):
      for kind in ("single", "mas"):
        workflow = task.make_workflow(task.generate_task(seed, "train", cfg), kind, cfg, 2, "chat")
        for role in workflow.roles:
          yield from (m["content"] for m in workflow.prompt(role))
          yield f"<answer>{workflow.expert_response(role)}</answer>"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  """A random Qwen2.5-0.5B-shaped model with one layer and its tokenizer, as on the Hub."""
  path = tmp_path_factory.mktemp("qwen-0.5b-1l")
  tok = tokenizers.Tokenizer(models.BPE(unk_token=None))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(list(_corpus()), trainers.BpeTrainer(
      vocab_size=1024, special_tokens=SPECIALS,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tok.save(str(path / "tokenizer.json"))
  (path / "tokenizer_config.json").write_text(json.dumps(
      {"pad_token": "<|endoftext|>", "chat_template": CHAT_TEMPLATE}))
  config = get_model_config("qwen2.5-0.5b", num_layers=1, vocab_size=tok.get_vocab_size(),
                            dtype="float32", param_dtype="float32")
  save_pretrained(build_model(config, seed=0), config, str(path))
  return path


def _config(checkpoint, task, **changes):
  config = at_grpo.get_config(f"{task},mas_shared,paper")
  config.model.path = str(checkpoint)
  config.total_steps, config.eval_every, config.log.wandb_mode = 1, 1, "disabled"
  config.task.num_tasks, config.task.eval_tasks, config.algo.k = 2, 1, 2
  config.task.env.max_turns = 2
  config.rollout.max_new_tokens = 12
  config.update_from_flattened_dict(changes)
  return config


def _one_step(checkpoint, task, tmp_path, **changes):
  config = _config(checkpoint, task, **{"model.dtype": "float32", **changes})
  assert config.task.prompt_style == "chat" and config.model.enable_thinking is False
  job = rl.build(config, sharding.make_mesh(data=1, fsdp=1, tensor=1))
  batch, metrics = job.batch_fn(job.state)
  assert batch["tokens"].shape[-1] > 100  # chat prompts, not the compact strings
  assert 0.0 <= metrics["rollout/invalid_rate"] <= 1.0
  state = trainer.run(config, str(tmp_path / task), job)
  assert int(state.step) == 1 and int(np.asarray(state.skipped_steps).sum()) == 0
  records = [json.loads(line) for line in open(tmp_path / task / "metrics.jsonl")]
  assert any("eval/greedy_success" in r for r in records) == bool(config.eval_every)
  assert any(np.isfinite(r.get("train/loss", np.nan)) for r in records)


def test_paper_scale_plan_path_step_on_cpu(checkpoint, tmp_path):
  """The cheap variant: one task, one episode per step, no evaluation."""
  _one_step(checkpoint, "plan_path", tmp_path, **{"task.num_tasks": 1, "eval_every": 0})


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS[1:])
def test_paper_scale_step_on_cpu_every_task(checkpoint, tmp_path, task):
  _one_step(checkpoint, task, tmp_path)


def _unsupported(checkpoint, tmp_path):
  bad = tmp_path / "bad"
  bad.mkdir()
  for name in ("tokenizer.json", "tokenizer_config.json", "model.safetensors"):
    (bad / name).write_bytes((checkpoint / name).read_bytes())
  config = json.loads((checkpoint / "config.json").read_text())
  (bad / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
  return dict(**{"model.path": str(bad)})


def _no_template(checkpoint, tmp_path):
  bad = tmp_path / "plain"
  bad.mkdir()
  for name in ("config.json", "model.safetensors"):
    (bad / name).write_bytes((checkpoint / name).read_bytes())
  tok = tokenizers.Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
  tok.save(str(bad / "tokenizer.json"))
  (bad / "tokenizer_config.json").write_text(json.dumps(
      {"chat_template": "{{ messages[0].content }}"}))
  return {"model.path": str(bad)}


@pytest.mark.parametrize("make_changes, message", [
    (_unsupported, "model_type 'gpt2' is not supported"),
    (_no_template, "renders neither ChatML"),
    (lambda c, t: {"task.prompt_style": "markdown"}, "renders \\('compact', 'chat'\\)"),
    (lambda c, t: {"model.path": "", "model.name": "tiny"}, "needs a tokenizer with a chat"),
])
def test_bad_input_is_one_clear_error_before_anything_compiles(checkpoint, tmp_path,
                                                               make_changes, message):
  config = _config(checkpoint, "plan_path", **make_changes(checkpoint, tmp_path))
  with CompileCounter.delta() as compiles, pytest.raises(common.ConfigError, match=message):
    rl.build(config, sharding.make_mesh(data=1, fsdp=1, tensor=1))
  assert compiles.count == 0


def test_humaneval_evaluation_of_a_chat_checkpoint(checkpoint, tmp_path):
  """`launch.evaluate` on HumanEval with chat prompts (the default for a checkpoint with a
  tokenizer.json): the problems come through the evaluation-set builder and are graded; a
  random model solves none."""
  import os
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = tmp_path / "humaneval"
  done = subprocess.run(
      [sys.executable, "-m", "launch.evaluate", "--task=humaneval", "--workflow=mas",
       f"--checkpoint={checkpoint}", "--num_tasks=2", "--max_new_tokens=8", f"--out={out}"],
      cwd=root, capture_output=True, text=True, timeout=600,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads((tmp_path / "humaneval.json").read_text())
  assert result["successes"] == [0, 0] and result["eval/success_rate"] == 0.0
  assert result["eval/invalid_rate"] == 1.0  # no <answer> tag: every action invalid, counted


@pytest.mark.slow
def test_marft_ppo_paper_cell_steps_with_chat_prompts(checkpoint):
  """MARFT's dual profile at the paper scale: chat prompts for the reasoner and the actor, the
  QMIX-mixed critic (MARFT's 1024-512 head) on the frozen trunk, one PPO iteration."""
  from experiments import ppo
  from experiments.configs import marft_ppo
  config = marft_ppo.get_config("dual,action,qmix,paper")
  config.update_from_flattened_dict({
      "model.path": str(checkpoint), "model.dtype": "float32", "task.num_tasks": 1,
      "algo.k": 2, "rollout.max_new_tokens": 12, "task.env.max_turns": 2})
  assert config.task.prompt_style == "chat" and config.critic.hidden_dims == (1024, 512)
  job = ppo.build(config, sharding.make_mesh(data=1, fsdp=1, tensor=1))
  batch, metrics = job.batch_fn(job.state)
  assert batch["policy"]["tokens"].shape[-1] > 100  # chat prompts
  assert batch["critic"]["state"].shape == (2, 2, 896)  # [E, T, hidden]
  state, step = job.train_step(job.state, batch)
  assert np.asarray(step["finite"]).all() and np.isfinite(float(step["value_loss"]))


@pytest.mark.slow
def test_maporl_paper_cell_steps_with_chat_prompts(checkpoint, tmp_path):
  """MAPoRL at the paper scale: two LoRA agents discuss with chat prompts, a verifier of the
  checkpoint's vocabulary scores every answer, one PPO iteration of both agents and value
  heads."""
  from flax import nnx
  from experiments import maporl
  from experiments.configs import maporl as maporl_config
  from marft.models.heads import ScoredLM
  from marft.models.hf import load_pretrained, save_scored_lm
  model, model_config = load_pretrained(str(checkpoint), dtype="float32")
  save_scored_lm(ScoredLM(model, rngs=nnx.Rngs(0)), model_config, str(tmp_path / "verifier"))
  config = maporl_config.get_config("paper,1")
  config.update_from_flattened_dict({
      "model.path": str(checkpoint), "model.dtype": "float32", "task.num_tasks": 1,
      "verifier.path": str(tmp_path / "verifier"), "rollout.max_new_tokens": 12,
      "task.env.max_turns": 2})
  assert config.task.prompt_style == "chat" and config.policies.lora_rank == 8
  job = maporl.build(config, sharding.make_mesh(data=1, fsdp=1, tensor=1))
  batch, metrics = job.batch_fn(job.state)
  assert batch["policy"]["tokens"].shape[-1] > 100  # chat prompts
  assert batch["critic"]["tokens"].shape[:3] == (2, 2, 2)  # [E, T, A, ...]
  assert metrics["train/penalised_answers"] == 8  # a random model writes no <answer> tag
  state, step = job.train_step(job.state, batch)
  assert np.asarray(step["finite"]).all() and np.isfinite(float(step["value_loss"]))


@pytest.mark.slow
def test_matpo_paper_cell_steps_with_chat_prompts(checkpoint):
  """MATPO at the paper scale: the planner's and the workers' chat prompts through the
  checkpoint's template, a random model's untagged replies counted invalid, one update."""
  from experiments import matpo
  from experiments.configs import matpo as matpo_config
  config = matpo_config.get_config("matpo,paper,0.25")
  config.update_from_flattened_dict({
      "model.path": str(checkpoint), "model.dtype": "float32", "task.num_tasks": 1,
      "algo.k": 2, "rollout.max_new_tokens": 12, "task.env.max_turns": 2})
  assert config.task.prompt_style == "chat" and config.task.env.top_k == 5
  job = matpo.build(config, sharding.make_mesh(data=1, fsdp=1, tensor=1))
  batch, metrics = job.batch_fn(job.state)
  assert batch["tokens"].shape[-1] > 100  # chat prompts
  assert metrics["rollout/invalid_rate"] == 1.0  # no tag: every reply invalid, none crashed
  state, step = job.train_step(job.state, batch)
  assert np.isfinite(np.asarray(step["loss"])).all()
