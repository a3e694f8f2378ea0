"""MASPRM: a process reward model from multi-agent MCTS values (`experiments/prm.py`), one
config per scale.

  python -m launch.train --config=experiments/configs/masprm.py            # tiny
  python -m launch.train --config=experiments/configs/masprm.py:paper \\
      --config.model.path=/ckpt/Qwen2.5-1.5B-Instruct

The multi-agent system is MARFT's sequential math trio (reasoner -> actor -> verifier, one pass:
`max_turns` 1), MASPRM's role DAG with fewer roles. tiny: the base pretrained here on math with
two operations on numbers 2..5 (`pretrain_math_marft.py`, compact prompts); the data search uses
MASPRM's settings (4 candidates per expansion at temperature 0.7, top-p 0.95, UCT c = 4, early
stop after 24 simulations without change) with 32 graded terminals per question (the paper: 64)
over 1,024 training questions; the whole PRM (trunk and a linear head) trains 600 steps of 64
steps. (On 256 questions, 55 informative trees, 2,420 steps and 300 updates gave a PRM with a
held-out AUC of 0.45 at the final step: no signal.) paper: a real checkpoint, chat prompts, the paper's 64 simulations.
"""
import ml_collections

from experiments import common

SCALES = ("tiny", "small", "paper")
ROLES = ("reasoner", "actor", "verifier")


def get_config(scale: str = "tiny") -> ml_collections.ConfigDict:
  if scale not in SCALES:
    raise ValueError(f"config cell {scale!r}: expected a scale in {SCALES}")
  on_cpu = scale != "paper"
  c = common.base_config(total_steps=600 if on_cpu else 1000, eval_every=300,
                         checkpoint_every=300, log_every=10, max_to_keep=1)
  c.model = dict(name=scale if on_cpu else "qwen2.5-1.5b", path="", tokenizer="",
                 base="math_marft" if on_cpu else "",
                 dtype="float32" if on_cpu else "bfloat16", enable_thinking=on_cpu,
                 remat="none", logprob_chunk=0)
  c.task = dict(name="math", workflow="trio", prompt_style="compact" if on_cpu else "chat",
                env=(dict(min_steps=2, max_steps=2, max_number=5, max_turns=1) if on_cpu
                     else dict(max_turns=1)))
  c.policies = dict(mapping={role: 0 for role in ROLES})
  c.rollout = dict(max_new_tokens=8 if on_cpu else 512)
  c.algo = dict(name="masprm")
  c.prm = dict(questions=1024 if on_cpu else 512, simulations=32 if on_cpu else 64, children=4,
               c=4.0, temperature=0.7, top_p=0.95, patience=24, keep_low=-0.7, keep_high=0.7,
               hidden_dims=(), batch_size=64, eval_questions=256, eval_samples=4)
  c.optimizer = dict(lr=3e-4 if on_cpu else 1e-5, warmup_steps=30, schedule="cosine",
                     weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-8, max_grad_norm=1.0)
  return c
