"""Tiny base model of the MAPoRL table: math (single, discussion) SFT on corrupted expert
demonstrations, a third of the revisions stubborn (the agent's own previous answer).

  python -m launch.pretrain --config=experiments/configs/pretrain_math_maporl.py

Math at 2 operations on numbers 2..5, discussions of 2 agents over 3 turns (the MARFT table's
task, so the two tables share a difficulty). The demonstrations' discussions show stand-in
verifier scores (`envs.discussion`). seq_len: a third-turn prompt is at most ~75 characters.
"""
from experiments import pretrain


def get_config():
  c = pretrain.default_config("math", corruption_alphabet="0123456789", seq_len=96,
                              total_steps=600, heuristic=0.3)
  c.task.env = dict(min_steps=2, max_steps=2, max_number=5, max_turns=3, agents=2)
  c.task.workflows = ("single", "discussion")
  return c
