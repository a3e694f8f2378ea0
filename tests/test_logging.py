"""metrics.jsonl, config.json, resume truncation, wandb offline."""
import json
import os

import numpy as np
import pytest

from marft.logging import MetricsLogger, read_metrics


def test_metrics_file_and_truncation_on_resume(tmp_path):
  workdir = str(tmp_path)
  logger = MetricsLogger(workdir, {"seed": 1}, total_steps=5, wandb_mode="disabled",
                         show_progress=False)
  for step in range(1, 5):
    logger.log(step, {"train/loss": np.float32(1.0 / step), "eval/success_rate": step * 0.1})
  logger.close()
  assert json.load(open(tmp_path / "config.json")) == {"seed": 1}
  records = read_metrics(workdir)
  assert [r["step"] for r in records] == [1, 2, 3, 4]
  assert records[1]["train/loss"] == float(np.float32(0.5))
  # A resume from step 2 drops what came after it.
  logger = MetricsLogger(workdir, {"seed": 1}, total_steps=5, start_step=2,
                         wandb_mode="disabled", show_progress=False)
  logger.log(3, {"train/loss": 7.0})
  logger.close()
  assert [(r["step"], r["train/loss"]) for r in read_metrics(workdir)] == [
      (1, 1.0), (2, 0.5), (3, 7.0)]
  with pytest.raises(ValueError, match="wandb_mode"):
    MetricsLogger(workdir, {}, total_steps=1, wandb_mode="cloud")
  logger = MetricsLogger(workdir, {}, total_steps=1, wandb_mode="disabled", show_progress=False)
  with pytest.raises(ValueError, match="scalar"):
    logger.log(1, {"train/loss": np.ones(3)})
  logger.close()


def test_wandb_offline_writes_a_local_run(tmp_path):
  logger = MetricsLogger(str(tmp_path), {"seed": 0}, total_steps=2, wandb_mode="offline",
                         show_progress=False)
  logger.log(1, {"train/loss": 0.5})
  logger.close()
  runs = [d for d in os.listdir(tmp_path / "wandb") if d.startswith("offline-run")]
  assert runs, os.listdir(tmp_path / "wandb")


def test_run_identity_survives_neutral_new_options_and_logging_changes():
  """The finished two-step table's runs (results/qmix_two_step.md names their directories)
  keep their hashes when a config gains an option at its neutral value or logs differently."""
  from experiments.tables import qmix_two_step as table
  from marft.logging import NEUTRAL_DEFAULTS, config_hash
  config = table.run_config("qmix", "uniform", "tiny", 5)
  assert config_hash(config.to_dict()) == "ca9570ca8b"
  with config.unlocked():
    for dotted, value in NEUTRAL_DEFAULTS.items():
      group, key = dotted.split(".")
      if group in config:  # options of groups this job has (a QMIX run has no `model`)
        config[group][key] = value
    config.log.wandb_mode = "disabled"
    config.log.every = 7
  assert config_hash(config.to_dict()) == "ca9570ca8b"
  with config.unlocked():
    config.algo.epochs = 2  # a value that changes what the run computes: a new run
  assert config_hash(config.to_dict()) != "ca9570ca8b"


def test_only_the_primary_process_writes(tmp_path):
  # In a multi-process run every process logs the same records; process 0 alone writes them.
  logger = MetricsLogger(str(tmp_path / "other"), {"seed": 0}, total_steps=2,
                         wandb_mode="offline", show_progress=False, primary=False)
  logger.log(1, {"train/loss": 0.5})
  logger.log_transcripts(1, [{"response": "x"}])
  logger.advance()
  logger.close()
  assert not os.path.exists(tmp_path / "other")
