"""launch.pretrain -> HF export -> launch.evaluate, end to end on a few Plan-Path instances."""
import json
import os
import subprocess
import sys

from marft.models.hf import load_pretrained

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  out = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


def test_pretrain_then_evaluate_with_swapped_roles(tmp_path):
  workdir = tmp_path / "base"
  _run("launch.pretrain", f"--workdir={workdir}", "--config.total_steps=4",
       "--config.task.num_train_tasks=8", "--config.task.eval_tasks=2",
       "--config.log.wandb_mode=disabled")
  model, config = load_pretrained(str(workdir / "hf"))
  assert config.vocab_size == 128 and config.num_layers == 4
  records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert {"eval/mas/greedy_success", "eval/single/sampled_success"} <= set(records[-1])
  assert len([r for r in records if "train/loss" in r]) >= 1
  out = tmp_path / "eval"
  hf = str(workdir / "hf")
  stdout = _run("launch.evaluate", "--task=plan_path", "--workflow=mas",
                f"--checkpoint={hf},{hf}", "--mapping=tool=1,plan=0", "--num_tasks=3",
                f"--out={out}")
  result = json.loads(open(f"{out}.json").read())
  assert result["mapping"] == {"tool": 1, "plan": 0}
  assert len(result["successes"]) == 3 and set(result["successes"]) <= {0, 1}
  assert result["eval/success_rate"] == sum(result["successes"]) / 3
  assert {"eval/reward/tool", "eval/reward/plan"} <= set(result)
  assert open(f"{out}.md").read().startswith("| plan_path | mas |")
  assert "eval/success_rate" in stdout
