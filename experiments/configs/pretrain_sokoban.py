"""Tiny base model for Sokoban: SFT on corrupted expert demonstrations of every role.

  python -m launch.pretrain --config=experiments/configs/pretrain_sokoban.py

Measured (2 CPU cores, seed 0): 106 s; test greedy 0.27 single / 0.22 MAS, sampled 0.23 / 0.14.
"""
from experiments import pretrain


def get_config():
  return pretrain.default_config("sokoban", corruption_alphabet="UDLR", total_steps=600)
