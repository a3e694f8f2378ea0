"""A run directory refuses to resume a run that started from something else (trainer.check_provenance)."""
import json

import pytest

from marft import trainer


def test_provenance_is_recorded_and_a_different_one_refuses_to_resume(tmp_path):
  first = {"base_model": "/runs/base/plan_path-aaaa", "task_settings": {"size": 5}}
  trainer.check_provenance(str(tmp_path), first, resuming=False)
  assert json.load(open(tmp_path / "provenance.json")) == first
  trainer.check_provenance(str(tmp_path), dict(first), resuming=True)  # the same: resumes
  rebuilt = {**first, "base_model": "/runs/base/plan_path-bbbb"}
  with pytest.raises(trainer.ProvenanceMismatch, match="different base_model") as error:
    trainer.check_provenance(str(tmp_path), rebuilt, resuming=True)
  assert "plan_path-aaaa" in str(error.value) and "plan_path-bbbb" in str(error.value)
  assert json.load(open(tmp_path / "provenance.json")) == first  # nothing overwritten
  # Without checkpoints there is nothing to mix up: a fresh start records the new provenance.
  trainer.check_provenance(str(tmp_path), rebuilt, resuming=False)
  assert json.load(open(tmp_path / "provenance.json")) == rebuilt
  trainer.check_provenance(str(tmp_path), None, resuming=True)  # jobs without provenance
