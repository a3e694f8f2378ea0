"""Tiny base model for code (coder + tester): SFT on corrupted expert demonstrations.

  python -m launch.pretrain --config=experiments/configs/pretrain_code.py

Measured (2 CPU cores, seed 0): 248 s; test greedy 0.61 single / 0.61 MAS, sampled 0.42 / 0.31.
"""
from experiments import pretrain


def get_config():
  return pretrain.default_config("code", corruption_alphabet="0123456789x+-*()<>=fab",
                                 seq_len=112, max_new_tokens=32, total_steps=300)
