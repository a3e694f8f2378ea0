"""MARFT agent-level PPO: one config per cell of the MARFT table, `<profile>,<credit>,<critic>,<scale>`.

  python -m launch.train --config=experiments/configs/marft_ppo.py      # dual,action,shared,tiny
  python -m launch.train --config=experiments/configs/marft_ppo.py:trio,token,per_agent,tiny
  python -m launch.train --config=experiments/configs/marft_ppo.py:dual,action,qmix,paper \\
      --config.model.path=/ckpt/Qwen2.5-1.5B-Instruct

profiles (MARFT's MATH profiles, `envs/math_task.py`): single (one agent), dual (reasoner ->
actor), trio (reasoner -> actor -> verifier); each role its own policy. credit: action
(MARFT-A) or token (MARFT-T). critic (`critic.kind`): shared, per_agent, vdn, qmix (mixed
critics are action-level). scales: tiny and small (the base models pretrained here on math with
two operations on numbers 2..5, `experiments/configs/pretrain_math_marft.py`, compact prompts)
and paper (a real checkpoint given by `model.path`, chat prompts, MARFT's hyperparameters:
lr 1e-6 per agent, critic MLP 1024-512 on a frozen trunk, KL early stop at 1e-3, horizon 3).
"""
import ml_collections

from experiments import common

PROFILES = {"single": ("agent",), "dual": ("reasoner", "actor"),
            "trio": ("reasoner", "actor", "verifier")}
CREDITS = ("action", "token")
CRITICS = ("shared", "per_agent", "vdn", "qmix")
SCALES = ("tiny", "small", "paper")


def get_config(cell: str = "dual,action,shared,tiny") -> ml_collections.ConfigDict:
  parts = cell.split(",")
  if (len(parts) != 4 or parts[0] not in PROFILES or parts[1] not in CREDITS
      or parts[2] not in CRITICS or parts[3] not in SCALES):
    raise ValueError(f"config cell {cell!r}: expected <profile>,<credit>,<critic>,<scale> with "
                     f"profile in {sorted(PROFILES)}, credit in {CREDITS}, critic in {CRITICS}, "
                     f"scale in {SCALES}")
  profile, credit, critic, scale = parts
  on_cpu = scale != "paper"
  c = common.base_config(total_steps=30 if on_cpu else 200, eval_every=10,
                         checkpoint_every=10, log_every=1, max_to_keep=2)
  c.model = dict(name=scale if on_cpu else "qwen2.5-1.5b", path="", tokenizer="",
                 base="math_marft" if on_cpu else "",
                 dtype="float32" if on_cpu else "bfloat16", enable_thinking=on_cpu,
                 remat="none", logprob_chunk=0)
  c.task = dict(name="math", workflow=profile, prompt_style="compact" if on_cpu else "chat",
                env=(dict(min_steps=2, max_steps=2, max_number=5, max_turns=3) if on_cpu
                     else dict(max_turns=3)),
                num_tasks=16 if on_cpu else 32, eval_tasks=256)
  c.policies = dict(mapping={role: i for i, role in enumerate(PROFILES[profile])},
                    lora_rank=0 if on_cpu else 8)
  c.eval = dict(other_workflow="", swap_roles=False)
  c.rollout = dict(max_new_tokens=8 if on_cpu else 512, temperature=1.0)
  c.algo = dict(name="marft_ppo", credit=credit, k=4, gamma=0.99, lam=0.95, clip_eps=0.2,
                entropy_coef=0.01, target_kl=0.02 if on_cpu else 1e-3, minibatches=2,
                agent_iteration_interval=0, micro_batch_rows=0, critic_warmup_steps=0)
  c.critic = dict(kind=critic, trunk="frozen", hidden_dims=(64,) if on_cpu else (1024, 512),
                  lr=1e-3 if on_cpu else 5e-6, updates=8 if on_cpu else 1, value_clip=0.2,
                  huber_delta=10.0, embed_dim=32, hypernet_hidden=64, max_grad_norm=0.5)
  # Tiny: on dual,action,shared (20 steps, seed 0) lr 3e-5 with MARFT's gradient clip 0.5 barely
  # moves the policy (approximate KL ~1e-6 a step, greedy 20.3 -> 23.8% at step 25); 1e-4 with
  # clip 1.0 reaches 30.1%; 3e-4 is noisier (22.7%). Paper: MARFT's per-agent lr and clip.
  c.optimizer = dict(lr=1e-4 if on_cpu else 1e-6, warmup_steps=0, schedule="constant",
                     weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-5,
                     max_grad_norm=1.0 if on_cpu else 0.5)
  return c
