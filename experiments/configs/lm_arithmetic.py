"""Supervised language modelling of generated addition problems, tiny model, CPU.

  python -m launch.train                       # this is the default config
  python -m launch.train --config=experiments/configs/lm_arithmetic.py --workdir=runs/lm

Expected (2 CPU cores): held-out exact-match accuracy (greedy) of `a+b=` completions rises from
0 to EXPECTED_ACCURACY within EXPECTED_MINUTES; the loss falls from ~4.8 to EXPECTED_LOSS.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # Common keys (every experiment has them).
  c.seed = 0
  c.total_steps = 1500
  c.eval_every = 250
  c.checkpoint_every = 250
  c.log = dict(wandb_mode="offline", project="marft", every=10, max_to_keep=3)
  c.mesh = dict(data=-1, fsdp=1, tensor=1)
  c.distributed = False
  # Model and optimizer.
  c.model = dict(name="tiny", dtype="float32", param_dtype="float32")
  c.optimizer = dict(lr=3e-3, warmup_steps=100, schedule="cosine", weight_decay=0.01,
                     b1=0.9, b2=0.95, eps=1e-8, max_grad_norm=1.0)
  # Task and algorithm.
  c.task = dict(name="arithmetic", max_operand=99, batch_size=64, eval_size=256)
  c.algo = dict(name="sft")
  return c
