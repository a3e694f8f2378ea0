"""Tiny base model of the MARFT PPO table: math (single, dual, trio) SFT on corrupted expert
demonstrations of every role (reasoner, actor, verifier).

  python -m launch.pretrain --config=experiments/configs/pretrain_math_marft.py

Math at 2 operations on numbers 2..5 (3 turns), so that the base is neither hopeless nor solved
and the sequential workflows' PPO has room to improve it. seq_len: the longest demonstration
(prompt + response + stop, over 2000 train tasks x 3 seeds, corruption 0.3 and 1.0) is 111
tokens (a trio verifier at the third step, prompt 109); 128 leaves room for 8 new tokens.
"""
from experiments import pretrain


def get_config():
  c = pretrain.default_config("math", corruption_alphabet="0123456789+-*yn", seq_len=128,
                              total_steps=600)
  c.task.env = dict(min_steps=2, max_steps=2, max_number=5, max_turns=3)
  c.task.workflows = ("single", "dual", "trio")
  return c
