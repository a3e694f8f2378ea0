"""Hypothesis profiles of the fuzz suite and the count of the inputs it generated.

`fuzz` (the default run): few examples per test, reproducible (derandomized), no deadline.
`fuzz-slow` (the `slow`-marked twins of every test, `pytest -m slow tests/fuzz`): many more
examples, drawn at random. Each test records the inputs its body saw (`fuzz_inputs`); the
terminal summary adds them up, under xdist too.
"""
import pytest
from hypothesis import HealthCheck, settings

from tests.fuzz import strategies

_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.large_base_example,
                                      HealthCheck.filter_too_much])
settings.register_profile("fuzz", derandomize=True, **_COMMON)
settings.register_profile("fuzz-slow", derandomize=False, **_COMMON)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
  strategies.COUNT[0] = 0
  yield
  if hasattr(getattr(item, "obj", None), "hypothesis"):
    item.user_properties.append(("fuzz_inputs", strategies.COUNT[0]))


def pytest_terminal_summary(terminalreporter):
  counts = [value for key in ("passed", "failed") for report in terminalreporter.stats.get(key, [])
            if report.when == "call" for name, value in report.user_properties
            if name == "fuzz_inputs"]
  if counts:
    terminalreporter.write_line(f"fuzz: {sum(counts)} generated inputs over {len(counts)} tests")
