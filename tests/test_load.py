"""benchmarks/load.py: the rollout engine and the train step compile only during warm-up, and
a rollout's peak memory stays bounded (each case in a fresh subprocess, for its own peak RSS).

A random `tiny` model (fixed seeds) parses no Plan-Path answer, so every episode plays every turn,
every response runs to `max_new_tokens`, and the rollout shapes (prompt bucket, batch bucket, width)
repeat exactly, and any compilation after the warm-up rollout is a shape that is not bucketed.
"""
import pytest

from benchmarks import isolated, load

_MIB = 2**20


def _check(result: dict) -> None:
  assert "error" not in result, result.get("error")
  assert result["compiles_warmup"] >= 1  # the sampler compiles in the warm-up rollout
  assert result["compiles_after"] == 0  # a second rollout, on new tasks, reuses its programs
  assert result["train_compiles_first"] >= 1
  assert result["train_compiles_after"] == 0  # another rollout's batch, the same bucketed shape
  spec = result["spec"]
  assert result["rows"] == spec["envs"] * spec["max_turns"] * 2  # mas: tool and plan each turn
  assert result["turns"] == spec["max_turns"]


def test_second_rollout_and_train_step_do_not_compile():
  spec = load.Spec(envs=64, max_turns=2, max_new_tokens=8, rollouts=1, train_steps=1,
                   train_rows=32)
  result = isolated.child_result(load.__file__, spec, 300)
  _check(result)
  assert result["train_shape"] == [1, 32, 64]
  # Measured ~505 MiB after the rollouts and ~780 MiB at the end (the jax runtime, XLA's
  # compiler and the train step's compile dominate); 1.5 GiB leaves room for allocator noise.
  assert result["total_rss"] < 1536 * _MIB
  lines = load.table([result])
  assert len(lines) == 3 and lines[2].startswith("| 64 | ")


@pytest.mark.slow
def test_1024_environments_bounded_memory_and_no_compiles_after_warmup():
  spec = load.Spec(envs=1024, max_turns=4, max_new_tokens=32, rollouts=1, train_steps=1,
                   train_rows=256)
  result = isolated.child_result(load.__file__, spec, 1800)
  _check(result)
  # Linear in the environments: ~1 MiB each (507 / 732 / 1510 MiB after 64 / 256 / 1,024 in
  # benchmarks/load.py), mostly the sampler's compiled buffers, which XLA's memory analysis puts
  # at 0.85 MiB a row for a 64-token prompt bucket + 32 new tokens (KV cache, prefill
  # activations; 868 MiB at 1,024 rows). 2 GiB = the ~0.5 GiB runtime of the 64-env run + those
  # 0.85 GiB + 0.65 GiB for host rows, workflows and allocator slack; a per-step or quadratic
  # leak at 1,024 environments would pass it.
  assert result["rollout_rss"] < 2048 * _MIB
  # The train step (256 rows x 96 tokens, fixed) adds ~1.1 GiB of activations: 2.6 GiB measured.
  assert result["total_rss"] < 3584 * _MIB
