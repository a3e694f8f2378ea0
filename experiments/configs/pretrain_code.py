"""Tiny base model for code (coder + tester): SFT on corrupted expert demonstrations.

  python -m launch.pretrain --config=experiments/configs/pretrain_code.py

Measured: see the README's base-model table.
"""
from experiments import pretrain


def get_config():
  return pretrain.default_config("code", corruption_alphabet="0123456789x+-*()<>=fab",
                                 seq_len=112, max_new_tokens=32, total_steps=300)
