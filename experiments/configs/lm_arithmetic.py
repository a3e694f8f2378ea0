"""Supervised language modelling of generated addition problems, tiny model, CPU.

  python -m launch.train                       # this is the default config
  python -m launch.train --config=experiments/configs/lm_arithmetic.py --workdir=runs/lm

Measured (2 CPU cores, 1.5 minutes wall clock including compilation, seed 0): greedy exact-match
accuracy of `a+b=` completions on held-out pairs 0.004 -> 0.34 (step 750) -> 0.94 (step 1500);
train loss 4.9 -> 1.01 (the operands themselves are unpredictable, so ~0.9 is the floor).
"""
import ml_collections

from experiments import common


def get_config() -> ml_collections.ConfigDict:
  c = common.base_config(total_steps=1500, eval_every=250, checkpoint_every=250)
  # Model and optimizer.
  c.model = dict(name="tiny", dtype="float32", param_dtype="float32")
  c.optimizer = dict(lr=3e-3, warmup_steps=100, schedule="cosine", weight_decay=0.01,
                     b1=0.9, b2=0.95, eps=1e-8, max_grad_norm=1.0)
  # Task and algorithm.
  c.task = dict(name="arithmetic", max_operand=99, batch_size=64, eval_size=256)
  c.algo = dict(name="sft")
  return c
