"""One GRPO iteration: marft vs TRL's `GRPOTrainer` and/or Tunix's `GRPOLearner` (`--peer`),
same weights, prompts and reward, all on the CPU (default) or all on one GPU (`--device=gpu`).

An iteration is a rollout (K sampled completions of each of N prompts, temperature 1, at most M
new tokens, stopping at `<eos>`), scoring them with a reward function, group advantages, and
one policy update (PPO clipped surrogate, eps 0.2, no KL term, token-mean loss, one epoch, one
AdamW step with global-norm clipping at 1.0 and a constant learning rate).

Every side trains the same random Qwen2 shaped like marft's `tiny` config, or `small` (10.9M
parameters) with `--model=small` (their own `model_type` is llama; the Qwen2 variant adds QKV
biases): it is built in marft, saved with `marft.models.hf.save_pretrained` and loaded by
transformers for TRL and by Tunix's own safetensors loader
(`tunix.models.qwen2.params.create_model_from_safe_tensors`) for Tunix. marft tokenizes with
`CharTokenizer`; TRL gets a character-level `tokenizers.Tokenizer` with the same ids, Tunix
`CharTokenizer` behind its custom-tokenizer interface (both checked on every prompt). Prompts
are Plan-Path grids (`envs.plan_path`, single-agent workflow), all 32 tokens long; the reward
of a completion is the fraction of its characters in `UDLR`.

marft's iteration: `model_sampler` (the jitted KV-cache sampler), `grpo.group_advantages`,
rows laid out as the rollout engine lays them out (prompt + response, padded to a
`shape_bucket`), `experiments.rl.policy_batches`, and `make_train_step` over `experiments.rl.loss`.
TRL's: one `GRPOTrainer` training step with `per_device_train_batch_size = N * K` and
`num_generations = K` (generation with transformers `generate`, no vLLM).
Tunix's: one global step of `tunix.rl.grpo.grpo_learner.GRPOLearner.train` on an `RLCluster`
whose actor, rollout and (unused) reference roles share one single-device mesh, hence one model
and no weight sync; the `vanilla` rollout engine (Tunix's jitted KV-cache `Sampler`, prefill +
`lax.while_loop` decode, top_p 1, a new seed each step); `GRPOConfig(num_generations=K,
num_iterations=1, beta=0, epsilon=0.2, loss_agg_mode="token-mean")`; Tunix's `PeftTrainer` step
with the same optax clip + AdamW. Its model's shape comes from the checkpoint's `config.json`
(Tunix's Qwen2 `ModelConfig` only has constructors for the public sizes); before timing, its
logits are compared with marft's on the prompts and the max |difference| is printed (about 5e-7
in float32). Tunix's rollout time covers `_generate_and_compute_advantage` (generation,
decoding, rewards, advantages), its total the learner's `_run_global_step` (the update and its
host bookkeeping included). Differences that remain: with `num_iterations=1` Tunix recomputes no
old log-probs (its ratio is against a stop-gradient copy of the new ones, marft's against the
sampler's log-probs, both 1 on-policy); Tunix drops `<eos>` from the trained completion tokens
and treats a sampled id 0 (`<pad>`) as padding; it left-pads prompts to the longest prompt and
right-pads completions to M.

Each side runs one warm-up iteration (marft's and Tunix's include the `jax.jit` compiles), then
the median of `--iterations` timed ones is reported; the sides run one after another in one
process (marft, TRL, Tunix; Tunix is imported only then, since it sets a global flax option).

Run from the repository root:

  pip install -e '.[bench]' && python benchmarks/grpo_step.py
  python benchmarks/grpo_step.py --num_prompts=16 --group_size=8 --max_new_tokens=32
  python benchmarks/grpo_step.py --device=gpu [--model=small --max_new_tokens=32]
  python benchmarks/grpo_step.py --peer=trl,tunix   # needs `pip install google-tunix` too

Measured on one NVIDIA H200 (both sides on the GPU; jax 0.11.2, torch 2.11.0+cu130,
transformers 5.17.0, trl 1.16.0; 16 host cores), median of 5 iterations (a second run of the
first row with 10 iterations: 0.026 vs 0.104 s, 3.93x):

| N x K, M, model | method | s / iteration | rollout s | update s | speedup vs TRL |
|---|---|---|---|---|---|
| 8 x 8, 16, tiny | marft | 0.024 | 0.021 | 0.003 | 4.55x |
| 8 x 8, 16, tiny | TRL GRPOTrainer | 0.108 | 0.088 | 0.021 | 1 |
| 8 x 8, 32, small | marft | 0.049 | 0.043 | 0.006 | 6.28x |
| 8 x 8, 32, small | TRL GRPOTrainer | 0.306 | 0.274 | 0.032 | 1 |

On the GPU both sides are launch-bound and the rollout dominates: marft's jitted KV-cache
decode step is one dispatch per token (1.3 ms a token for 64 rows, prefill included),
`generate`'s is many small kernels; the update is 7x (tiny) to 5x (small) faster. The
script's CPU-load check flagged 17-19% of the host's cores busy in other processes during
marft's timings on that machine.

Measured on 2 CPU cores (x86_64, idle: other processes under 2% of the CPUs; jax 0.10.2,
torch 2.13.0+cpu, transformers 5.24.0, trl 1.16.0), median of 5 iterations:

| N x K, M | method | s / iteration | rollout s | update s | update batch | speedup vs TRL |
|---|---|---|---|---|---|---|
| 8 x 8, 16 | marft | 0.268 | 0.072 | 0.194 | 64 x 48 | 0.83x |
| 8 x 8, 16 | TRL GRPOTrainer | 0.223 | 0.089 | 0.133 | 64 x 48 | 1 |
| 8 x 8, 32 | marft | 0.403 | 0.126 | 0.276 | 64 x 64 | 0.86x |
| 8 x 8, 32 | TRL GRPOTrainer | 0.345 | 0.158 | 0.183 | 64 x 64 | 1 |
| 3 x 3, 8 | marft | 0.084 | 0.026 | 0.057 | 16 x 48 | 0.62x |
| 3 x 3, 8 | TRL GRPOTrainer | 0.052 | 0.026 | 0.026 | 9 x 40 | 1 |

On the CPU the 5x target is not met. marft's rollout is 1.0-1.3x faster; its update, on the same
batch shape, is 1.5x slower: at this size both updates are compute-bound (~20 GFLOP of forward
and backward for 64 x 48 tokens of a 1M-parameter model, ~0.1-0.2 s on 2 cores), and XLA:CPU's
forward + backward + AdamW runs at about two thirds of torch's rate. A 5x lead would need the
update to cost less than its arithmetic, so it cannot come from overheads on CPU. (Padding rows to
a power of two with a 64-row minimum, as before `shape_bucket`, measured 0.62x at 8 x 8, M=16 and
0.17x at 3 x 3, M=8.) Under load the order flips: with other processes using half of the CPUs,
one run measured TRL at 5.8 s / iteration and marft at 0.57 s (torch's threads slow down far
more on shared cores); the script warns when that happens.

With Tunix (`--peer=trl,tunix`, 2 CPU cores, idle: other processes 0%; jax 0.10.2, flax 0.12.8,
google-tunix 0.1.7, torch 2.13.0+cpu, transformers 5.12.1, trl 1.16.0), 8 x 8, M=16, in three
runs (median of 5, 5 and 10 iterations):

| method | s / iteration | rollout s | update s | marft vs it |
|---|---|---|---|---|
| marft | 0.463 / 0.487 / 0.387 | 0.144 / 0.143 / 0.112 | 0.309 / 0.359 / 0.277 | |
| TRL GRPOTrainer | 0.362 / 0.313 / 0.291 | 0.139 / 0.125 / 0.115 | 0.190 / 0.188 / 0.178 | 0.78x / 0.64x / 0.75x |
| Tunix GRPOLearner | 0.639 / 0.587 / 0.451 | 0.163 / 0.149 / 0.109 | 0.473 / 0.422 / 0.344 | 1.38x / 1.20x / 1.17x |

("marft vs it": its s / marft's s, above 1 when marft is faster.) Tunix's logits agree with
marft's to 4.8e-7 (max |logit| 0.75). Both JAX sides roll out at about the same speed (two
jitted KV-cache samplers on the same XLA); marft's update is 1.2-1.5x faster than Tunix's. Timed
alone on the same 64 x 48 batch (idle, median of 10): marft's `make_train_step` 0.26 s (forward
0.046 s, loss + grad without the policy vmap 0.23 s, vmap over P=1 +15%), Tunix's loss + grad +
AdamW 0.35 s (forward 0.049 s); the rest of each side's update time above is spent outside
the jitted step (batch transfer; for Tunix its trainer loop, metrics and data queue; not
measured separately). Both gradients are ~19.5 GFLOP (XLA's cost analysis); in an XLA:CPU
profile of marft's loss + grad, matmuls take 57% of the time, the split / concatenation around
the fused QKV and gate/up matmuls 17%, SiLU 10%, other elementwise ops, RMSNorm and copies the
rest; Tunix's loses most on its SiLU backward (a quarter of its time) and transposes.
"""
from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

# Run as `python benchmarks/grpo_step.py`: make the repository root importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import flax  # noqa: E402
from flax import nnx  # noqa: E402

try:  # TRL's stack (`pip install -e '.[bench]'`), needed only for `--peer=trl`
  import datasets  # noqa: E402
  import tokenizers  # noqa: E402
  import torch  # noqa: E402
  import transformers  # noqa: E402
  import trl  # noqa: E402
except ImportError as e:
  _TRL_MISSING: str | None = str(e)
else:
  _TRL_MISSING = None
# Tunix (`google-tunix`, `--peer=tunix`) is imported only when its side is built, after marft's
# and TRL's timings: it sets a global flax option on import.

from benchmarks.cpu_load import cpu_seconds, others_share  # noqa: E402
from algorithms import grpo  # noqa: E402
from envs import plan_path  # noqa: E402
from experiments import rl  # noqa: E402
from marft.models import hf  # noqa: E402
from marft.models.config import NAMED_CONFIGS, ModelConfig  # noqa: E402
from marft.models.decoder import build_model  # noqa: E402
from marft.policies import policy_params, stack_policies  # noqa: E402
from marft.rollout.engine import RolloutConfig, model_sampler  # noqa: E402
from marft.sampling import shape_bucket  # noqa: E402
from marft.tokenizers import CharTokenizer  # noqa: E402
from marft.train_step import init_train_state, make_optimizer, make_train_step  # noqa: E402

_MAX_OTHERS_SHARE = 0.1  # CPU share of other processes above which timings are flagged
_TRL, _TUNIX = "TRL GRPOTrainer", "Tunix GRPOLearner"
_SHORT = {_TRL: "TRL", _TUNIX: "Tunix"}
_UDLR = frozenset("UDLR")

_NUM_PROMPTS = flags.DEFINE_integer("num_prompts", 8, "N: prompts per iteration.")
_GROUP_SIZE = flags.DEFINE_integer("group_size", 8, "K: completions per prompt (GRPO group).")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 16, "M: most new tokens per completion.")
_ITERATIONS = flags.DEFINE_integer("iterations", 5,
                                   "Timed iterations per side after one warm-up; median reported.")
_LR = flags.DEFINE_float("lr", 1e-5, "Learning rate (constant, both sides).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for the weights, the prompts and sampling.")
_DEVICE = flags.DEFINE_enum("device", "cpu", ["cpu", "gpu"],
                            "Where both sides run: the CPU, or the first GPU (jax and torch).")
_MODEL = flags.DEFINE_enum("model", "tiny", ["tiny", "small"],
                           "marft's named shape that the random Qwen2 takes.")
_TARGET_SPEEDUP = flags.DEFINE_float("target_speedup", 5.0,
                                     "Per-iteration speedup over TRL the run should reach.")
_PEERS = ("trl", "tunix")
_PEER = flags.DEFINE_list("peer", ["trl"],
                          "Frameworks timed beside marft: `trl` (TRL's GRPOTrainer), `tunix` "
                          "(Tunix's GRPOLearner), or both: `--peer=trl,tunix`.")
flags.register_validator("peer", lambda peers: bool(peers) and set(peers) <= set(_PEERS),
                         message=f"--peer: a comma-separated subset of {_PEERS}")


def udlr_fraction(text: str) -> float:
  """The reward on both sides: the fraction of the completion's characters that are moves."""
  return sum(c in _UDLR for c in text) / len(text) if text else 0.0


def _qwen2_shaped(name: str) -> ModelConfig:
  """marft's named shape as a Qwen2 checkpoint (Qwen2 always has QKV biases)."""
  shape = NAMED_CONFIGS[name]
  if shape.model_type == "qwen2":
    return shape
  return shape.replace(model_type="qwen2", qkv_bias=True, qk_norm=False)


def _prompts(tokenizer: CharTokenizer, n: int, seed: int) -> tuple[list[list[int]], list[str]]:
  """`n` Plan-Path prompts as marft ids (`tokenizer.chat`) and as the text TRL tokenizes.

  The text is the chat rendering without `<bos>`, which TRL's tokenizer prepends.
  """
  cfg = plan_path.default_config()
  ids, texts = [], []
  for i in range(n):
    task = plan_path.generate_task(seed * 100_003 + i, "train", cfg)
    workflow = plan_path.make_workflow(task, "single", cfg, cfg["max_turns"])
    prompt = tokenizer.chat(workflow.prompt("agent"))
    ids.append(prompt)
    texts.append(tokenizer.decode(prompt))  # specials (the leading <bos>) decode to ""
  return ids, texts


def _hf_char_tokenizer(tokenizer: CharTokenizer) -> Any:
  """A `PreTrainedTokenizerFast` with `tokenizer`'s ids that prepends `<bos>` like `chat`."""
  vocab = {s: i for i, s in enumerate(tokenizer.SPECIALS)}
  vocab.update({c: tokenizer.encode(c)[0] for c in tokenizer.CHARS})
  # Ids the model can sample beyond the characters decode to nothing, as in CharTokenizer.
  extras = [f"<extra_{i}>" for i in range(len(vocab), tokenizer.vocab_size)]
  vocab.update({s: len(vocab) + j for j, s in enumerate(extras)})
  # BPE without merges and without a pre-tokenizer: one token per character, spaces and
  # newlines included.
  tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
  tok.add_special_tokens(list(tokenizer.SPECIALS) + extras)
  tok.decoder = tokenizers.decoders.Fuse()
  tok.post_processor = tokenizers.processors.TemplateProcessing(
      single="<bos> $A", special_tokens=[("<bos>", tokenizer.bos_id)])
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
      unk_token="<unk>", padding_side="left")


# ----------------------------------------------------------------------------- marft


def _marft_runner(model: nnx.Module, tokenizer: CharTokenizer, prompts: list[list[int]]
                  ) -> Callable[[int], dict[str, float]]:
  """`run(iteration)`: one marft GRPO iteration; its seconds (rollout, update, total), sizes."""
  k, m = _GROUP_SIZE.value, _MAX_NEW_TOKENS.value
  algo = ml_collections.ConfigDict({"clip_eps": 0.2, "dual_clip": 0.0,
                                    "aggregation": "token-mean", "kl_coef": 0.0})
  optimizer = make_optimizer({"lr": _LR.value, "total_steps": 1_000, "schedule": "constant",
                              "weight_decay": 0.0, "max_grad_norm": 1.0})
  graphdef, params, _ = stack_policies(model, 1)
  holder = {"state": init_train_state(params, optimizer, _SEED.value)}
  train_step = make_train_step(functools.partial(rl.loss, cfg=algo), optimizer, graphdef)
  rollout_config = RolloutConfig(k=k, tree=False, max_new_tokens=m, temperature=1.0)
  requests = [p for p in prompts for _ in range(k)]  # the K copies of a prompt are adjacent
  groups = np.repeat(np.arange(len(prompts), dtype=np.int32), k)
  key = jax.random.key(_SEED.value)

  def run(iteration: int) -> dict[str, float]:
    start = time.perf_counter()
    state = holder["state"]
    policy = nnx.merge(graphdef, policy_params(state.params, 0))
    sampler = model_sampler(policy, tokenizer, rollout_config)
    samples = sampler(requests, jax.random.fold_in(key, iteration))
    rewards = np.asarray([udlr_fraction(tokenizer.decode(s.tokens)) for s in samples],
                         np.float32)
    advantages = np.asarray(grpo.group_advantages(rewards, groups))
    width = shape_bucket(max(len(p) + len(s.tokens) for p, s in zip(requests, samples)))
    rows = {"tokens": np.full((len(samples), width), tokenizer.pad_id, np.int32),
            "loss_mask": np.zeros((len(samples), width), np.float32),
            "behavior_logp": np.zeros((len(samples), width), np.float32),
            "advantages": advantages.astype(np.float32),
            "row_weight": np.ones((len(samples),), np.float32)}
    for i, (prompt, sample) in enumerate(zip(requests, samples)):
      p, n = len(prompt), len(sample.tokens)
      rows["tokens"][i, :p] = prompt
      rows["tokens"][i, p:p + n] = sample.tokens
      rows["loss_mask"][i, p:p + n] = 1.0
      rows["behavior_logp"][i, p:p + n] = sample.logprobs
    batch = rl.policy_batches(rows, np.zeros((len(samples),), np.int32), 1)
    rollout_done = time.perf_counter()
    state, metrics = train_step(state, batch)
    jax.block_until_ready((state, metrics))
    holder["state"] = state
    end = time.perf_counter()
    return {"rollout": rollout_done - start, "update": end - rollout_done,
            "total": end - start, "tokens": float(sum(len(s.tokens) for s in samples)),
            "rows": batch["tokens"].shape[1], "width": batch["tokens"].shape[2]}

  return run


# ----------------------------------------------------------------------------- TRL


def _trl_runner(path: str, tokenizer: CharTokenizer, texts: list[str], prompts: list[list[int]],
                workdir: str) -> Callable[[], list[dict[str, float]]]:
  """`run() -> one timing dict per training step` of a TRL GRPOTrainer (first = warm-up)."""
  hf_tokenizer = _hf_char_tokenizer(tokenizer)
  encoded = hf_tokenizer(texts)["input_ids"]
  if encoded != prompts:
    raise AssertionError("the TRL tokenizer does not reproduce CharTokenizer's prompt ids")
  on_gpu = _DEVICE.value == "gpu"
  model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
  n, k, m = len(texts), _GROUP_SIZE.value, _MAX_NEW_TOKENS.value
  steps = 1 + _ITERATIONS.value

  def udlr_reward(completions: Sequence[str], **kwargs: Any) -> list[float]:
    del kwargs
    return [udlr_fraction(c) for c in completions]

  config = trl.GRPOConfig(
      output_dir=workdir, use_cpu=not on_gpu, bf16=False, fp16=False, gradient_checkpointing=False,
      per_device_train_batch_size=n * k, gradient_accumulation_steps=1, num_generations=k,
      max_completion_length=m, temperature=1.0, top_p=1.0, top_k=0, beta=0.0,
      num_iterations=1, epsilon=0.2, loss_type="dapo", scale_rewards="group",
      learning_rate=_LR.value, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
      max_grad_norm=1.0, max_steps=steps, logging_strategy="no", save_strategy="no",
      report_to="none", disable_tqdm=True, log_completions=False, dataloader_num_workers=0,
      seed=_SEED.value)
  dataset = datasets.Dataset.from_dict({"prompt": texts})
  timings: list[dict[str, float]] = []
  current: dict[str, float] = {}

  class StepTimer(transformers.TrainerCallback):

    def on_step_begin(self, args, state, control, **kwargs):
      current.clear()
      current.update(start=time.perf_counter(), rollout=0.0, tokens=0.0, rows=0, width=0)

    def on_step_end(self, args, state, control, **kwargs):
      if on_gpu:
        torch.cuda.synchronize()
      total = time.perf_counter() - current["start"]
      timings.append({"rollout": current["rollout"], "update": total - current["rollout"],
                      "total": total, "tokens": current["tokens"], "rows": current["rows"],
                      "width": current["width"]})

  trainer = trl.GRPOTrainer(model=model, reward_funcs=udlr_reward, args=config,
                            train_dataset=dataset, processing_class=hf_tokenizer,
                            callbacks=[StepTimer()])
  generate_and_score = trainer._generate_and_score_completions

  def timed_generate_and_score(*args: Any, **kwargs: Any) -> Any:
    start = time.perf_counter()
    out = generate_and_score(*args, **kwargs)
    current["rollout"] += time.perf_counter() - start
    current["tokens"] += float(out["completion_mask"].sum())
    current["rows"] = out["completion_ids"].shape[0]
    current["width"] = out["prompt_ids"].shape[1] + out["completion_ids"].shape[1]
    return out

  # The rollout half of a step: generation, decoding, rewards and advantages.
  trainer._generate_and_score_completions = timed_generate_and_score
  trainer.remove_callback(transformers.PrinterCallback)  # it prints the end-of-run summary

  def run() -> list[dict[str, float]]:
    trainer.train()
    if len(timings) != steps:
      raise AssertionError(f"expected {steps} timed TRL steps, got {len(timings)}")
    return timings

  return run


# ----------------------------------------------------------------------------- Tunix


class _TunixCharTokenizer:
  """`CharTokenizer` behind the interface Tunix's `TokenizerAdapter` asks of a custom tokenizer
  (`encode`, `decode` and the `bos_id()`, `eos_id()`, `pad_id()` methods)."""

  def __init__(self, tokenizer: CharTokenizer):
    self._tokenizer = tokenizer

  def encode(self, text: str, **kwargs: Any) -> list[int]:
    del kwargs
    return self._tokenizer.encode(text)

  def decode(self, ids: Sequence[int], **kwargs: Any) -> str:
    del kwargs
    return self._tokenizer.decode(ids)

  def bos_id(self) -> int:
    return self._tokenizer.bos_id

  def eos_id(self) -> int:
    return self._tokenizer.eos_id

  def pad_id(self) -> int:
    return self._tokenizer.pad_id


def _tunix_mesh() -> jax.sharding.Mesh:
  """One device, with the axis names Tunix's Qwen2 shardings and data sharding use."""
  return jax.make_mesh((1, 1), ("fsdp", "tp"), devices=jax.devices()[:1],
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)


def _tunix_qwen2(path: str, mesh: jax.sharding.Mesh) -> nnx.Module:
  """Tunix's Qwen2 with the weights of `path` (Tunix's own safetensors loader).

  Tunix's Qwen2 `ModelConfig` has constructors for the public Qwen2.5 sizes only, so the shape is
  read here from the checkpoint's `config.json`.
  """
  from tunix.models.qwen2 import model as qwen2_model
  from tunix.models.qwen2 import params as qwen2_params

  with open(os.path.join(path, "config.json")) as f:
    hf_config = json.load(f)
  if hf_config["model_type"] != "qwen2":
    raise ValueError(f"Tunix's Qwen2 cannot read model_type {hf_config['model_type']!r}")
  rope = hf_config.get("rope_parameters") or {}
  config = qwen2_model.ModelConfig(
      num_layers=hf_config["num_hidden_layers"], vocab_size=hf_config["vocab_size"],
      embed_dim=hf_config["hidden_size"], hidden_dim=hf_config["intermediate_size"],
      num_heads=hf_config["num_attention_heads"], head_dim=hf_config["head_dim"],
      num_kv_heads=hf_config["num_key_value_heads"],
      rope_theta=rope.get("rope_theta", hf_config.get("rope_theta", 10000.0)),
      norm_eps=hf_config["rms_norm_eps"], use_tied_embedding=hf_config["tie_word_embeddings"],
      dtype=jnp.float32, param_dtype=jnp.float32)
  return qwen2_params.create_model_from_safe_tensors(path, config, mesh=mesh, dtype=jnp.float32)


def tunix_logits_difference(tunix_model: nnx.Module, model: nnx.Module,
                            prompts: list[list[int]]) -> tuple[float, float]:
  """`(max |Tunix logits - marft logits|, max |marft logit|)` on the prompts cut to a common
  length (full causal attention, positions 0..T-1, no padding)."""
  width = min(len(p) for p in prompts)
  tokens = jnp.asarray([p[:width] for p in prompts], jnp.int32)
  positions = jnp.broadcast_to(jnp.arange(width, dtype=jnp.int32), tokens.shape)
  causal = jnp.broadcast_to(jnp.tril(jnp.ones((width, width), bool)),
                            (tokens.shape[0], width, width))
  ours = np.asarray(model(tokens))
  theirs, _ = tunix_model(tokens, positions, None, causal)
  return float(np.abs(np.asarray(theirs) - ours).max()), float(np.abs(ours).max())


def _tunix_runner(path: str, model: nnx.Module, tokenizer: CharTokenizer, texts: list[str],
                  prompts: list[list[int]]) -> tuple[Callable[[], list[dict[str, float]]],
                                                     tuple[float, float]]:
  """`(run, logits check)`: `run() -> one timing dict per GRPO step of Tunix's GRPOLearner`
  (first = warm-up), and `tunix_logits_difference` of its freshly loaded model."""
  import optax
  from tunix.rl import rl_cluster as rl_cluster_lib
  from tunix.rl.grpo import grpo_learner
  from tunix.rl.rollout import base_rollout

  n, k, m = len(texts), _GROUP_SIZE.value, _MAX_NEW_TOKENS.value
  steps = 1 + _ITERATIONS.value
  adapter = _TunixCharTokenizer(tokenizer)
  # Tunix's sampler tokenizes the prompt text and prepends <bos>.
  if [[adapter.bos_id()] + adapter.encode(t) for t in texts] != prompts:
    raise AssertionError("Tunix's tokenization does not reproduce CharTokenizer's prompt ids")
  mesh = _tunix_mesh()
  tunix_model = _tunix_qwen2(path, mesh)
  logits_check = tunix_logits_difference(tunix_model, model, prompts)

  prompt_width = max(len(p) for p in prompts)
  rollout_config = base_rollout.RolloutConfig(
      max_tokens_to_generate=m, temperature=1.0, top_p=1.0, top_k=None, seed=_SEED.value,
      max_prompt_length=prompt_width, kv_cache_size=prompt_width + m,
      eos_tokens=list(tokenizer.stop_ids), return_logprobs=False)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0),
                          optax.adamw(optax.constant_schedule(_LR.value), b1=0.9, b2=0.999,
                                      eps=1e-8, weight_decay=0.0))
  cluster_config = rl_cluster_lib.ClusterConfig(
      role_to_mesh={role: mesh for role in (rl_cluster_lib.Role.ACTOR,
                                            rl_cluster_lib.Role.REFERENCE,
                                            rl_cluster_lib.Role.ROLLOUT)},
      rollout_engine="vanilla", offload_to_cpu=False,
      training_config=rl_cluster_lib.RLTrainingConfig(
          actor_optimizer=optimizer, eval_every_n_steps=steps + 1, max_steps=steps),
      rollout_config=rollout_config)
  # Actor and rollout on one mesh share one model: no weight sync between the two.
  cluster = rl_cluster_lib.RLCluster(actor=tunix_model, reference=None, tokenizer=adapter,
                                     cluster_config=cluster_config)

  def udlr_reward(prompts: Sequence[str], completions: Sequence[str], **kwargs: Any
                  ) -> list[float]:
    del prompts, kwargs
    return [udlr_fraction(c) for c in completions]

  algo = grpo_learner.GRPOConfig(num_generations=k, num_iterations=1, beta=0.0, epsilon=0.2,
                                 loss_agg_mode="token-mean")
  learner = grpo_learner.GRPOLearner(rl_cluster=cluster, algo_config=algo,
                                     reward_fns=udlr_reward)
  timings: list[dict[str, float]] = []
  current: dict[str, float] = {}
  generate_and_advantage = learner._generate_and_compute_advantage
  global_step = learner._run_global_step

  def timed_generate_and_advantage(*args: Any, **kwargs: Any) -> Any:
    # A new sampling seed every step (Tunix's default is the same key every call).
    rollout_config.seed = _SEED.value * 100_003 + len(timings)
    start = time.perf_counter()
    example = generate_and_advantage(*args, **kwargs)
    jax.block_until_ready(example.advantages)
    current["rollout"] += time.perf_counter() - start
    current["tokens"] += float(np.asarray(example.completion_mask).sum())
    current["rows"] = example.completion_ids.shape[0]
    current["width"] = example.prompt_ids.shape[1] + example.completion_ids.shape[1]
    return example

  def timed_global_step(*args: Any, **kwargs: Any) -> Any:
    current.clear()
    current.update(rollout=0.0, tokens=0.0, rows=0, width=0)
    start = time.perf_counter()
    out = global_step(*args, **kwargs)
    jax.block_until_ready(nnx.state(cluster.actor_trainer.model))
    total = time.perf_counter() - start
    timings.append({"rollout": current["rollout"], "update": total - current["rollout"],
                    "total": total, "tokens": current["tokens"], "rows": current["rows"],
                    "width": current["width"]})
    return out

  # The rollout half of a step: generation, decoding, rewards and advantages.
  learner._generate_and_compute_advantage = timed_generate_and_advantage
  learner._run_global_step = timed_global_step
  dataset = [{"prompts": np.asarray(texts)} for _ in range(steps)]

  def run() -> list[dict[str, float]]:
    learner.train(dataset)
    if len(timings) != steps:
      raise AssertionError(f"expected {steps} timed Tunix steps, got {len(timings)}")
    return timings

  return run, logits_check


# ----------------------------------------------------------------------------- report




def _median(timings: list[dict[str, float]], key: str) -> float:
  return statistics.median(t[key] for t in timings)


def _share(value: float | None) -> str:
  return "unknown" if value is None else f"{value:.0%}"


def _versions(peers: Sequence[str]) -> str:
  out = [f"jax {jax.__version__} ({jax.default_backend()})", f"flax {flax.__version__}"]
  if "trl" in peers:
    out += [f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
            f"transformers {transformers.__version__}", f"trl {trl.__version__}"]
  if "tunix" in peers:
    out.append(f"google-tunix {importlib.metadata.version('google-tunix')}")
  return ", ".join(out)


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)
  peers = [p for p in _PEERS if p in _PEER.value]
  if "trl" in peers and _TRL_MISSING is not None:
    raise app.UsageError(f"--peer=trl needs TRL's stack (pip install -e '.[bench]'): "
                         f"{_TRL_MISSING}")
  if "tunix" in peers:
    try:
      importlib.metadata.version("google-tunix")
    except importlib.metadata.PackageNotFoundError as e:
      raise app.UsageError("--peer=tunix needs `pip install google-tunix`") from e
  if "trl" in peers:
    # transformers 5 renames `gradient_checkpointing`, which TRL's config still sets.
    warnings.filterwarnings("ignore", category=FutureWarning)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(os.cpu_count() or 1)
  if _DEVICE.value == "cpu":
    jax.config.update("jax_platforms", "cpu")
  elif jax.default_backend() != "gpu" or ("trl" in peers and not torch.cuda.is_available()):
    raise app.UsageError(f"--device=gpu: jax's backend is {jax.default_backend()}" +
                         (f", torch sees a GPU: {torch.cuda.is_available()}"
                          if "trl" in peers else ""))
  n, k, m, iterations = (_NUM_PROMPTS.value, _GROUP_SIZE.value, _MAX_NEW_TOKENS.value,
                         _ITERATIONS.value)
  config = _qwen2_shaped(_MODEL.value)
  tokenizer = CharTokenizer(config.vocab_size)
  prompts, texts = _prompts(tokenizer, n, _SEED.value)
  model = build_model(config, seed=_SEED.value)

  results, shares = {}, {}
  logits_check = None
  with tempfile.TemporaryDirectory() as path, tempfile.TemporaryDirectory() as workdir:
    hf.save_pretrained(model, config, path)
    marft_run = _marft_runner(model, tokenizer, prompts)
    # Each side is built just before it runs (Tunix is imported there).
    sides: dict[str, Callable[[], Callable[[], list[dict[str, float]]]]] = {
        "marft": lambda: lambda: [marft_run(i) for i in range(iterations + 1)]}
    if "trl" in peers:
      sides[_TRL] = lambda: _trl_runner(path, tokenizer, texts, prompts, workdir)
    if "tunix" in peers:

      def build_tunix() -> Callable[[], list[dict[str, float]]]:
        nonlocal logits_check
        run, logits_check = _tunix_runner(path, model, tokenizer, texts, prompts)
        print(f"logits check: Tunix's Qwen2 vs marft's Decoder, same weights, {n} prompts: "
              f"max |difference| {logits_check[0]:.2e} (max |logit| {logits_check[1]:.2f})",
              flush=True)
        return run

      sides[_TUNIX] = build_tunix
    for name, build in sides.items():
      run = build()
      cpu_start, began = cpu_seconds(), time.perf_counter()
      results[name] = run()
      shares[name] = others_share(cpu_start, time.perf_counter() - began)
      print(f"measured {name}", flush=True)

  totals = {name: _median(timings[1:], "total") for name, timings in results.items()}
  print()
  print(f"host: {platform.processor() or platform.machine()}, os.cpu_count()={os.cpu_count()}; "
        f"{_versions(peers)}")
  if _DEVICE.value == "gpu":
    print(f"GPU: {jax.devices()[0].device_kind} (every side)")
  print(f"model: random Qwen2 shaped like marft `{_MODEL.value}`, {config.num_params():,} "
        "params, float32; "
        f"N={n} Plan-Path prompts of {len(prompts[0])} tokens x K={k} completions, "
        f"M={m} new tokens at most (stop at <eos>), temperature 1.0, clip 0.2, beta 0, "
        f"lr {_LR.value:g}; median of {iterations} iterations after one warm-up")
  references = [name for name in (_TRL, _TUNIX) if name in results]
  header = ["method", "s / iteration", "rollout s", "update s", "rollout share",
            "completion tokens / iteration", "update batch (rows x tokens)"]
  header += [f"speedup vs {_SHORT[name]} (x)" for name in references]
  header.append("warm-up iteration s")
  print()
  print("| " + " | ".join(header) + " |")
  print("|" + "|".join("---" for _ in header) + "|")
  for name, timings in results.items():
    timed = timings[1:]
    total, rollout, update = (_median(timed, key) for key in ("total", "rollout", "update"))
    ratios = "".join(f"{totals[ref] / total:.2f} | " for ref in references)
    print(f"| {name} | {total:.3f} | {rollout:.3f} | {update:.3f} | {rollout / total:.0%} | "
          f"{_median(timed, 'tokens'):.0f} | {timed[-1]['rows']} x {timed[-1]['width']} | "
          f"{ratios}{timings[0]['total']:.2f} |")
  print()
  for name in references:
    print(f"- marft vs {_SHORT[name]}: {totals[name] / totals['marft']:.2f}x "
          f"({_SHORT[name]} s / marft s per iteration; above 1: marft is faster)")
  for name, timings in results.items():
    per_iteration = ", ".join(f"{t['total']:.3f}" for t in timings[1:])
    print(f"- {name}: iterations {per_iteration} s; CPU share used by other processes "
          f"meanwhile {_share(shares[name])}")
  if logits_check is not None:
    print(f"- logits check (Tunix's safetensors loader on marft's save_pretrained output): max "
          f"|Tunix - marft| {logits_check[0]:.2e} over {n} prompts (max |logit| "
          f"{logits_check[1]:.2f})")
  print(f"- update batch: marft pads the row count (at least {rl._MIN_ROWS}; padding rows carry "
        "zero weight) and the width to a `shape_bucket` (a power of two or 1.5 times one)" +
        ("; TRL's width is the prompt plus the longest completion of the batch" if _TRL in results
         else "") +
        ("; Tunix's is the prompt plus M (completions right-padded to M; <eos> is not a "
         "trained token)" if _TUNIX in results else "") + ".")
  contended = [name for name, share in shares.items()
               if share is not None and share > _MAX_OTHERS_SHARE]
  if contended:
    print(f"- WARNING: other processes used more than {_MAX_OTHERS_SHARE:.0%} of the CPUs "
          f"during {', '.join(contended)}; these timings are unreliable.")
  if _TRL in results:
    speedup = totals[_TRL] / totals["marft"]
    met = "met" if speedup >= _TARGET_SPEEDUP.value else "NOT met"
    print(f"- target: marft >= {_TARGET_SPEEDUP.value:g}x faster per iteration than TRL: {met} "
          f"({speedup:.2f}x)")


if __name__ == "__main__":
  app.run(main)
