"""Faults: a training run killed (SIGKILL or SIGTERM) at random moments and resumed each time
finishes with the uninterrupted run's metrics and transcripts, float for float, and never leaves
an unreadable checkpoint. Twenty kills per job in the slow suite, on one job of each family
(AT-GRPO, MARFT PPO with a QMIX-mixed critic, MATPO, the AgentPRM PRM phase); one SIGKILL of the
AT-GRPO job by default."""

import pytest

from tests.faults import harness


def _check(job, tmp_path, kills, seed, total_steps, checkpoint_every=2, eval_every=5,
           extra=(), **kill_options):
  model = harness.random_base_model(str(tmp_path / "base"))
  straight = str(tmp_path / "straight")
  harness.run_to_completion(
      harness.command(job, model, straight, total_steps, checkpoint_every, eval_every) +
      list(extra), str(tmp_path / "straight.log"))
  faulty = str(tmp_path / "faulty")
  report = harness.kill_and_resume(
      harness.command(job, model, faulty, total_steps, checkpoint_every, eval_every) +
      list(extra), faulty, kills=kills, seed=seed, **kill_options)
  print(f"{job}: {report}")
  assert report.kills == kills, report
  assert report.unreadable == [], report
  for name in ("metrics.jsonl", "transcripts.jsonl"):
    want = harness.records(straight, name)
    assert harness.records(faulty, name) == want, name
  assert max(r["step"] for r in harness.records(straight, "metrics.jsonl")) == total_steps
  assert harness.saved_steps(faulty)[-1] == total_steps
  return report


def test_at_grpo_survives_a_sigkill(tmp_path):
  # Seed 0 draws a SIGKILL 0.27 s after the first logged step (no evaluation at step 0), a
  # few steps into the run: most likely past the last checkpoint, so the resumed run logs some
  # steps again. SIGTERM's save-and-stop is checked in process by default
  # (tests/test_trainer.py) and through the command line under -m slow.
  report = _check("at_grpo", tmp_path, kills=1, seed=0, total_steps=9, checkpoint_every=3,
                  eval_every=0, extra=["--config.curriculum.max_turns=(2,)"])
  assert report.sigkills == 1 and report.steps_at_kill[0] >= 1, report


@pytest.mark.slow
@pytest.mark.parametrize("job", sorted(harness.JOBS))
def test_twenty_random_kills_leave_the_run_unchanged(tmp_path, job):
  # The PRM phase's updates take milliseconds: it needs more steps to leave room for 20 kills.
  total_steps = 160 if job == "agentprm" else 40
  report = _check(job, tmp_path, kills=20, seed=1, total_steps=total_steps, starting=0.2)
  assert report.sigkills and report.sigterms, report
