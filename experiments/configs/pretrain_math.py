"""Tiny base model for math (tool + reasoner): SFT on corrupted expert demonstrations.

  python -m launch.pretrain --config=experiments/configs/pretrain_math.py

Measured: see the README's base-model table.
"""
from experiments import pretrain


def get_config():
  return pretrain.default_config("math", corruption_alphabet="0123456789+-*", seq_len=104,
                                 total_steps=600)
