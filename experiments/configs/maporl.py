"""MAPoRL (verifier-scored discussion, influence-aware reward, incentives, per-agent PPO): one
config per cell of the MAPoRL table, `<scale>[,<alpha>]`.

  python -m launch.train --config=experiments/configs/maporl.py            # tiny, alpha 0
  python -m launch.train --config=experiments/configs/maporl.py:tiny,1     # all incentives 1
  python -m launch.train --config=experiments/configs/maporl.py:paper \\
      --config.model.path=/ckpt/Qwen2.5-1.5B-Instruct --config.verifier.path=/ckpt/verifier

Two agents (each its own policy and value head) discuss each math question for three turns.
`alpha` sets the four collaboration incentives (a0..a3, `algorithms/maporl.py`) to one value, as
the table sweeps them. Scales: tiny and small (the base pretrained here on math with two
operations on numbers 2..5, `experiments/configs/pretrain_math_maporl.py`, compact prompts; the
verifier trained here, `experiments/configs/verifier_math.py`) and paper (a real checkpoint,
chat prompts, the reference's hyperparameters: LoRA 8, lr 1e-5, KL coefficient 0.002, value
coefficient 0.1, 300 new tokens; `verifier.path` a verifier saved by the verifier job).
`--config.verifier.kind=stand_in` shows the discussion's nearly exact stand-in scores in place
of the trained verifier's (the table's verifier ablation).

Expected (tiny, 2 CPU cores, about 4 minutes a run alone; `results/maporl.md`): the base team
answers 21.9% of the 256 test questions right greedy at every turn (the verifier's held-out AUC
is 0.68); after 30 steps, alpha 0 ends at 19.5 ± 0.6% greedy over 3 seeds: the paper's gain
does not appear at this scale (see the table for why).
"""
import math

import ml_collections

from experiments import common

SCALES = ("tiny", "small", "paper")


def get_config(cell: str = "tiny") -> ml_collections.ConfigDict:
  parts = cell.split(",")
  if len(parts) not in (1, 2) or parts[0] not in SCALES:
    raise ValueError(f"config cell {cell!r}: expected <scale>[,<alpha>] with scale in {SCALES}")
  scale = parts[0]
  try:
    alpha = float(parts[1]) if len(parts) == 2 else 0.0
  except ValueError as e:
    raise ValueError(f"config cell {cell!r}: alpha {parts[1]!r} is not a number") from e
  if not math.isfinite(alpha):
    raise ValueError(f"config cell {cell!r}: alpha {parts[1]!r} is not finite")
  on_cpu = scale != "paper"
  c = common.base_config(total_steps=30 if on_cpu else 300, eval_every=10 if on_cpu else 50,
                         checkpoint_every=10 if on_cpu else 50, log_every=1, max_to_keep=2)
  c.model = dict(name=scale if on_cpu else "qwen2.5-1.5b", path="", tokenizer="",
                 base="math_maporl" if on_cpu else "",
                 dtype="float32" if on_cpu else "bfloat16", enable_thinking=on_cpu,
                 remat="none", logprob_chunk=0)
  c.task = dict(name="math", workflow="discussion",
                prompt_style="compact" if on_cpu else "chat",
                env=(dict(min_steps=2, max_steps=2, max_number=5, max_turns=3, agents=2)
                     if on_cpu else dict(max_turns=3, agents=2)),
                num_tasks=16 if on_cpu else 32, eval_tasks=256)
  c.policies = dict(mapping={"agent1": 0, "agent2": 1}, lora_rank=0 if on_cpu else 8)
  c.verifier = dict(path="", kind="model")
  c.rollout = dict(max_new_tokens=8 if on_cpu else 300, temperature=1.0)
  c.algo = dict(name="maporl", k=2, alphas=(alpha,) * 4, influence_gamma=0.3, penalty=-10.0,
                kl_coef=0.002, gamma=1.0, lam=0.95, clip_eps=0.2, vf_coef=0.1,
                minibatches=2, micro_batch_rows=0)
  # Squared value loss (a Huber delta no error reaches), clipped at 0.2: TRL's PPOv2.
  c.critic = dict(hidden_dims=(64,) if on_cpu else (1024, 512), lr=1e-3 if on_cpu else 1e-5,
                  updates=4 if on_cpu else 1, value_clip=0.2, huber_delta=1e6,
                  max_grad_norm=1.0)
  c.optimizer = dict(lr=1e-4 if on_cpu else 1e-5, warmup_steps=0 if on_cpu else 10,
                     schedule="constant", weight_decay=0.0, b1=0.9, b2=0.95 if not on_cpu
                     else 0.999, eps=1e-5, max_grad_norm=1.0)
  return c
