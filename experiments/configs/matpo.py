"""MATPO vs single-agent GRPO on search QA: one config per cell of the MATPO table,
`<regime>,<scale>[,<noise>]`.

  python -m launch.train --config=experiments/configs/matpo.py            # matpo,tiny,0
  python -m launch.train --config=experiments/configs/matpo.py:single_grpo,tiny,0.25
  python -m launch.train --config=experiments/configs/matpo.py:matpo,paper \\
      --config.model.path=/ckpt/Qwen3-1.7B

regimes:
- single_grpo: one agent that searches and answers; GRPO over its K rollouts per question.
- matpo: the planner delegates one-hop subtasks to nested workers, one shared model; MATPO's
  credit (`algorithms/matpo.py`).
- matpo_per_role: as matpo, one policy per role (P = 2, one vmapped update).
- matpo_no_recap / matpo_no_summary: the paper's ablations (the worker does not see the main
  question; the planner gets the worker's whole transcript instead of its summary).
Both regimes sample the same K rollouts of the same questions (equal rollout budget).
noise: the fraction of search results replaced by false facts (0, 0.25, 0.5 in the table).
scales: tiny (the 1M-parameter base pretrained here, `pretrain_search_qa.py`, compact prompts),
small (the same recipe, 10.9M) and paper (a real checkpoint, chat prompts, the reference's K 8,
lr 1e-6, clip 0.2 / dual clip 3.0, no KL).
"""
import ml_collections

from experiments import common

REGIMES = ("single_grpo", "matpo", "matpo_per_role", "matpo_no_recap", "matpo_no_summary")
SCALES = ("tiny", "small", "paper")


def get_config(cell: str = "matpo,tiny,0") -> ml_collections.ConfigDict:
  parts = cell.split(",")
  if len(parts) not in (2, 3) or parts[0] not in REGIMES or parts[1] not in SCALES:
    raise ValueError(f"config cell {cell!r}: expected <regime>,<scale>[,<noise>] with regime "
                     f"in {REGIMES}, scale in {SCALES}")
  regime, scale = parts[:2]
  try:
    noise = float(parts[2]) if len(parts) == 3 else 0.0
  except ValueError as e:
    raise ValueError(f"config cell {cell!r}: noise {parts[2]!r} is not a number") from e
  if not 0 <= noise <= 1:
    raise ValueError(f"config cell {cell!r}: noise {parts[2]!r} is not a probability in [0, 1]")
  on_cpu = scale != "paper"
  # Tiny: 20 steps of 8 questions x K 4 (a MATPO step is ~500 planner and worker rows; about
  # 20 s a step on 2 CPU cores).
  c = common.base_config(total_steps=20 if on_cpu else 200, eval_every=10 if on_cpu else 20,
                         checkpoint_every=10 if on_cpu else 20, log_every=1, max_to_keep=2)
  c.model = dict(name=scale if on_cpu else "qwen3-1.7b", path="", tokenizer="",
                 base="search_qa" if on_cpu else "",
                 dtype="float32" if on_cpu else "bfloat16", enable_thinking=on_cpu,
                 remat="none", logprob_chunk=0)
  env = dict(min_hops=1, max_hops=2 if on_cpu else 3, noise=noise,
             query_recap=regime != "matpo_no_recap",
             final_summary=regime != "matpo_no_summary")
  if not on_cpu:
    env.update(max_turns=6, worker_turns=5, top_k=5)
  workflow = "single" if regime == "single_grpo" else "mas"
  c.task = dict(name="search_qa", env=env, workflow=workflow,
                prompt_style="compact" if on_cpu else "chat",
                num_tasks=8 if on_cpu else 32, eval_tasks=256)
  mapping = ({"agent": 0} if workflow == "single" else
             {"planner": 0, "worker": 1} if regime == "matpo_per_role" else
             {"planner": 0, "worker": 0})
  c.policies = dict(mapping=mapping, lora_rank=0)
  c.eval = dict(other_workflow="", swap_roles=False)
  c.rollout = dict(max_new_tokens=14 if on_cpu else 1024, temperature=1.0)
  c.curriculum = dict(max_turns=(), every=100)
  c.algo = dict(name="matpo", k=4 if on_cpu else 8, tree=False, continuation="best",
                minibatches=2 if on_cpu else 1, micro_batch_rows=0, alpha=1.0, eps=1e-6,
                normalize_std=True, drop_zero_variance=False, clip_eps=0.2, dual_clip=3.0,
                aggregation="token-mean", kl_coef=0.0)
  # Tiny: at lr 3e-5 and one update a rollout, 20 steps left both regimes at their base
  # (greedy 15.6 -> 14.1% single, 10.9 -> 10.5% MATPO); 1e-4 and two minibatches (the MARFT
  # table's tiny learning rate) move the policy within the budget.
  c.optimizer = dict(lr=1e-4 if on_cpu else 1e-6, warmup_steps=0, schedule="constant",
                     weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-8, max_grad_norm=1.0)
  return c
