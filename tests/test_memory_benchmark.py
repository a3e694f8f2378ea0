"""benchmarks/memory.py: its compile-time analysis (shapes only) and its report lines."""
from benchmarks import memory

_GIB = 2**30


def _compiled(**knobs) -> dict:
  """Memory analysis of a 1-layer, 0.5B-shaped LoRA update at 2 x 64 (nothing allocated)."""
  spec = memory.Spec("qwen2.5-0.5b", rows=2, tokens=64, lora_rank=4, layers=1, **knobs)
  return memory.measure(spec, run=False)


def test_chunking_and_accumulation_lower_the_compiled_peak():
  base = _compiled()
  lean = _compiled(logprob_chunk=16, micro_batch_rows=1)
  assert base["num_layers"] == 1 and base["trainable"] < base["params"] / 100
  # The [2, 64, 151936] float32 logits (74 MiB) and their gradient dominate the baseline; chunks
  # of 16 positions over one row at a time hold an eighth of that.
  assert lean["compiled"]["temp"] < 0.4 * base["compiled"]["temp"]
  for r in (base, lean):
    c = r["compiled"]
    assert c["peak"] == c["argument"] + c["output"] - c["alias"] + c["temp"]


def _result(model, peak_gib, measured_gib=None, **knobs):
  spec = memory.Spec(model, 8, 1024, lora_rank=16, **knobs)
  r = {"spec": memory.dataclasses.asdict(spec), "params": 494_000_000, "trainable": 8_800_000,
       "num_layers": 24, "compiled": {"peak": int(peak_gib * _GIB), "temp": int(peak_gib * _GIB)}}
  if measured_gib is not None:
    r["measured"] = int(measured_gib * _GIB)
  return r


def test_table_ratios_and_target_line():
  results = [_result("qwen2.5-0.5b", 40.0), _result("qwen2.5-0.5b", 10.0, logprob_chunk=256),
             {"spec": memory.dataclasses.asdict(memory.Spec("qwen2.5-0.5b", 8, 1024, "block")),
              "error": "TraceContextError: boom"}]
  lines = memory.table(results, "peak RSS")
  assert len(lines) == 5 and all(l.count("|") == lines[0].count("|") for l in lines)
  assert "| 10.00 |" in lines[3] and "| 0.25 |" in lines[3]
  assert "TraceContextError" in lines[4]
  assert "PASS" in memory.target_line(results, 16.0)
  assert "FAIL" in memory.target_line(results, 8.0)
  # A measured peak, where there is one, decides.
  assert "FAIL" in memory.target_line([_result("qwen2.5-0.5b", 10.0, measured_gib=17.0)], 16.0)
  assert memory.target_line([_result("small", 1.0)], 16.0) is None
