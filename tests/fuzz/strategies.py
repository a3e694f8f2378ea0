"""Inputs of the fuzz suite and `fuzz`, the decorator that turns a property into its tests.

`fuzz(*strategies, examples=n, slow=m)` makes the decorated property a default test of `n`
examples (profile `fuzz`) and adds its `slow`-marked twin `test_slow_<name>` of `m` examples
(profile `fuzz-slow`) to the same module. Every call of the property body counts one generated
input (`COUNT`, reported by `conftest.py`). The slow counts follow the cost of an example:
thousands for parsers (1-2 ms an example), hundreds to a thousand for whole episodes, 100k-char
texts and math-verify (3-9 ms); the slow run draws some 59k inputs in about 3 minutes.
"""
from __future__ import annotations

import functools
import math
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

COUNT = [0]  # calls of fuzzed bodies in the running test

# Characters that parsers trip on: RTL and bidi controls, zero-width, NUL and other controls,
# line separators, non-ASCII digits and letters whose case mapping changes length.
WEIRD = ("\x00", "\x01", "\x1c", "\x7f", "\x85", "\xa0", "\u200b", "\u200c", "\u200d",
         "\u200e", "\u200f", "\u202a", "\u202e", "\u2066", "\u2069", "\u2028", "\u2029",
         "\ufeff", "\ufffd", "\u0301", "\u0663", "\uff11", "\uff32", "\u00b2", "\u2155", "\u00df",
         "\u0130", "\u0131", "\ufb00", "\u01c5", "\u05d0", "\u0627", "\U0001f642", "\U000e0041",
         "\u3000", "\t", "\r", "\n")
# Fragments of valid answers of every task, so that drawn text gets near the parsers' grammars.
TOKENS = ("U", "D", "L", "R", "u", "r", "1", "2", "3", "4", "0", "9", "-", ".", ",", ";", " ",
          "=", "==", "####", "12", "-3", "2.5", "1e5", "1/2", "\\boxed{", "}", "\\frac{1}{2}",
          "$", "(", ")", "*", "+", "/", "%", "**", "<answer>", "</answer>", "<ANSWER>",
          "<think>", "</think>", "```", "```python\n", "`", "__", "S ", "A ", "D ", "F ",
          "<search>", "</search>", "<delegate>", "</delegate>", "<summary>", "</summary>",
          "f(", "f(2)==7", "f('a')", "assert ", "def f(x):", "\n  return ", "lambda", "yes",
          "no", "y", "n", "nan", "inf", "1" * 40, "(" * 50, "[" * 30, "None", "<eos>", "<pad>")


def _huge(piece: str, chars: int) -> str:
  return piece * (chars // len(piece) + 1)


# Any text: unicode (no surrogates), bytes decoded, grammar fragments mixed with weird
# characters, empty, and 100k+ character outputs.
texts = st.one_of(
    st.just(""),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=60),
    st.binary(max_size=80).map(lambda b: b.decode("utf-8", "replace")),
    st.binary(max_size=80).map(lambda b: b.decode("latin-1")),
    st.lists(st.one_of(st.sampled_from(TOKENS), st.sampled_from(WEIRD)), max_size=25)
    .map("".join),
    st.builds(_huge, st.one_of(st.sampled_from(TOKENS), st.sampled_from(WEIRD),
                               st.text(min_size=1, max_size=8)),
              st.integers(100_000, 120_000)),
)

# Values of the wrong type where text (or a number) is expected.
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
wrong_types = st.one_of(
    st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                         max_size=3),
    st.binary(max_size=5), st.tuples(st.text(max_size=3)))
anything = st.one_of(texts, wrong_types)


def fuzz(*args, examples: int, slow: int, **kwargs):
  """The property as a `fuzz`-profile test of `examples` examples, plus its slow twin of
  `slow` examples."""
  def wrap(body):
    @functools.wraps(body)
    def counted(*a, **k):
      COUNT[0] += 1
      return body(*a, **k)

    def test(profile: str, n: int):
      return settings(settings.get_profile(profile), max_examples=n)(
          given(*args, **kwargs)(counted))

    name = body.__name__.removeprefix("test_")
    setattr(sys.modules[body.__module__], f"test_slow_{name}",
            pytest.mark.slow(test("fuzz-slow", slow)))
    return test("fuzz", examples)
  return wrap
