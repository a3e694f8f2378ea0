"""Tiny base model for Plan-Path: SFT on corrupted expert demonstrations of every role.

  python -m launch.pretrain --config=experiments/configs/pretrain_plan_path.py

Expected (2 CPU cores): MEASURED_BELOW.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 1500
  c.eval_every = 500
  c.checkpoint_every = 500
  c.log = dict(wandb_mode="offline", project="marft", every=20, max_to_keep=2)
  c.mesh = dict(data=-1, fsdp=1, tensor=1)
  c.distributed = False
  c.model = dict(name="tiny", dtype="float32", param_dtype="float32")
  c.optimizer = dict(lr=3e-3, warmup_steps=100, schedule="cosine", weight_decay=0.01,
                     b1=0.9, b2=0.95, eps=1e-8, max_grad_norm=1.0)
  c.task = dict(name="plan_path", env={}, workflows=("single", "mas"), num_train_tasks=1500,
                corruption=0.3, corruption_alphabet="UDLR", batch_size=64, seq_len=128,
                eval_tasks=64)
  c.rollout = dict(max_new_tokens=8)
  c.algo = dict(name="pretrain")
  return c
