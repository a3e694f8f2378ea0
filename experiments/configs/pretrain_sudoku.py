"""Tiny base model for 4x4 Sudoku: SFT on corrupted expert demonstrations of every role.

  python -m launch.pretrain --config=experiments/configs/pretrain_sudoku.py

Measured: see the README's base-model table.
"""
from experiments import pretrain


def get_config():
  return pretrain.default_config("sudoku", corruption_alphabet="1234", total_steps=600)
