"""The AgentPRM table: the chain of runs (each phase reads the exports of the runs before it),
and the table written from hand-made run logs (before/after rows, the 2-SE verdict by hand)."""
import json
import math
import os

from experiments.tables import agentprm


def test_runs_chain_by_their_exports(tmp_path):
  dirs = {name: str(tmp_path / name) for name in agentprm.RUNS}
  policy_2 = agentprm.run_config("policy_2", "tiny", 3, dirs)
  assert policy_2.seed == 3 and policy_2.algo.name == "agentprm_policy"
  assert policy_2.prm.path == os.path.join(dirs["prm_1"], "hf_prm")
  assert policy_2.model.path == os.path.join(dirs["policy_1"], "hf_policy0")
  assert policy_2.model.tokenizer == "char"  # the tiny exports hold no tokenizer files
  prm_1 = agentprm.run_config("prm_1", "tiny", 0, dirs)
  assert prm_1.prm.method == "agentprm" and prm_1.model.path.endswith("policy_1/hf_policy0")
  inverse_1 = agentprm.run_config("inverse_1", "tiny", 0, dirs)
  assert inverse_1.prm.path.endswith("inverse_0/hf_prm") and inverse_1.model.path == ""
  assert agentprm.run_config("inverse_0", "tiny", 0, dirs).prm.method == "inverse"
  # every stage reads only runs of earlier stages
  seen: set[str] = set()
  for stage in agentprm.STAGES:
    for name in stage:
      assert {r for r in agentprm.RUNS[name][1:] if r} <= seen
    seen |= set(stage)
  assert seen == set(agentprm.RUNS)
  # the overrides a run is launched with give back its config
  for name in agentprm.RUNS:
    config = agentprm.run_config(name, "tiny", 0, dirs)
    for key, value in agentprm.overrides(config, name).items():
      section, field = key.split(".")
      assert config[section][field] == value


def _write(workdir, records):
  os.makedirs(workdir)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)


def _policy_evals(first, last):
  return [{"step": step, "eval/greedy_success": g, "eval/sampled_success": s,
           "eval/best_of_n_success": b, "eval/best_of_n_samples": 180.0}
          for step, (g, s, b) in ((0, first), (30, last))]


def test_write_table_from_run_logs(tmp_path):
  runs = {}
  for seed, shift in ((0, 0.0), (1, 0.1)):
    logs = {"policy_1": _policy_evals((0.5 + shift, 0.4, 0.6), (0.7 + shift, 0.5, 0.6)),
            "policy_2": _policy_evals((0.7 + shift, 0.5, 0.6), (0.7 + shift, 0.5, 0.7)),
            "inverse_1": _policy_evals((0.5 + shift, 0.4, 0.3), (0.4 + shift, 0.4, 0.3)),
            "prm_0": [{"step": 0, "data/success_rate": 0.6, "data/examples": 800.0},
                      {"step": 200, "eval/auc": 0.9 + shift}],
            "prm_1": [{"step": 200, "eval/auc": 0.8, "data/success_rate": 0.7,
                       "data/examples": 700.0}],
            "inverse_0": [{"step": 200, "eval/auc": 0.2, "data/success_rate": 0.6,
                           "data/expert_transitions": 300.0,
                           "data/policy_transitions": 8000.0}]}
    for name, records in logs.items():
      runs[(name, seed)] = str(tmp_path / f"{name}-{seed}")
      _write(runs[(name, seed)], records)
  paths = agentprm.write_table(runs, "tiny", 2, str(tmp_path / "results"))
  text = open(paths[0]).read()
  assert "| base policy | AgentPRM PRM 0 | 55.0 ± 5.0 | 40.0 ± 0.0 | 60.0 ± 0.0 | 180 |" in text
  assert "| AgentPRM iteration 1 | AgentPRM PRM 0 | 75.0 ± 5.0 | 50.0 ± 0.0 |" in text
  assert "| InversePRM iteration 1 | InversePRM 0 | 45.0 ± 5.0 |" in text
  # iteration 1 vs base, greedy, pooled over 2 x 128 tasks: 0.75 vs 0.55; z-test by hand
  pooled, n = 0.65, 256
  z = 0.20 / math.sqrt(pooled * (1 - pooled) * 2 / n)
  p = math.erfc(z / math.sqrt(2))
  assert f"AgentPRM iteration 1 vs base (greedy): 75.0 vs 55.0 (+20.0), p = {p:.2g}; gain holds" \
      in text
  assert "InversePRM iteration 1 vs base (greedy): 45.0 vs 55.0 (-10.0)" in text
  assert "Best-of-N vs greedy" not in text  # the label reads Best-of-16
  assert "Best-of-16 vs greedy, base policy under InversePRM 0: 30.0 vs 55.0 (-25.0)" in text
  assert "| AgentPRM PRM 0 (base's episodes) | 60.0 ± 0.0 | 800 | 0.950 (± 0.050) |" in text
  assert "| InversePRM 0 (solver vs base) | 60.0 ± 0.0 | 8300 | 0.200 (± 0.000) |" in text
  assert os.path.exists(paths[-1]) and paths[-1].endswith("agentprm.png")
