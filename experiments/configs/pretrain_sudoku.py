"""Tiny base model for 4x4 Sudoku: SFT on corrupted expert demonstrations of every role.

  python -m launch.pretrain --config=experiments/configs/pretrain_sudoku.py

Measured (2 CPU cores, seed 0): 113 s; test greedy 0.00 single / 0.02 MAS, sampled 0.11 / 0.12.
"""
from experiments import pretrain


def get_config():
  return pretrain.default_config("sudoku", corruption_alphabet="1234", total_steps=600)
