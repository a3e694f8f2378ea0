"""Tiny base model for Sokoban: SFT on corrupted expert demonstrations of every role.

  python -m launch.pretrain --config=experiments/configs/pretrain_sokoban.py

Measured: see the README's base-model table.
"""
from experiments import pretrain


def get_config():
  return pretrain.default_config("sokoban", corruption_alphabet="UDLR", total_steps=600)
