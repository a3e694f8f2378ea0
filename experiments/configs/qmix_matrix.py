"""QMIX / VDN on a one-shot cooperative matrix game given by its payoff table.

  python -m launch.train --config=experiments/configs/qmix_matrix.py          # climbing game
  python -m launch.train --config=experiments/configs/qmix_matrix.py --config.algo.mixer=vdn
  python -m launch.train --config=experiments/configs/qmix_matrix.py \
      --config.env.payoff='[[8,-12,-12],[-12,0,0],[-12,0,0]]' \
      --config.algo.epsilon_start=1.0 --config.algo.epsilon_finish=1.0   # uniform exploration

`env.payoff` is a table's text (two agents: rows are agent 1's actions, columns agent 2's; any
number of actions) or one of `climbing`, `penalty`, `nonmonotonic`. Each episode is one joint
action, so `eval/greedy_return` is the payoff of the greedy joint action.

Measured (2 shared CPU cores, 10-16 s per run with compilation, 1,000 updates, 10 seeds via
`--config.algo.num_seeds=10`), greedy return per seed:

  | payoff | exploration | QMIX | VDN |
  |---|---|---|---|
  | climbing (optimum 11) | annealed 1 -> 0.05 | 6 in 8 seeds, 5 in 2 | 5 in all |
  | penalty (optimum 10) | annealed 1 -> 0.05 | 2 in all | 2 in all |
  | nonmonotonic (optimum 8) | uniform (1 -> 1) | 0 in all | 0 in all |

Neither factorisation finds the guarded optima; the non-monotonic table is the known limit of a
monotonic mixer (Weighted QMIX, Rashid et al. 2020).
"""
import ml_collections

from experiments import common


def get_config() -> ml_collections.ConfigDict:
  c = common.base_config(total_steps=10, eval_every=5, checkpoint_every=5, log_every=1)
  c.env = dict(name="matrix", payoff="climbing")
  c.algo = dict(name="qmix", mixer="qmix", agent="ff", hidden_dim=64, mixer_embed_dim=32,
                hypernet_hidden=64, gamma=0.99, td_lambda=0.0, double_q=True, optimizer="adam",
                lr=5e-4, max_grad_norm=10.0, num_envs=8, batch_size=32, buffer_size=5000,
                learning_starts=32, target_update_interval=200, target_tau=0.0,
                epsilon_start=1.0, epsilon_finish=0.05, epsilon_anneal_steps=4000,
                eval_episodes=1, num_seeds=1, seeds_in="vmap",
                updates_per_step=100)
  return c
