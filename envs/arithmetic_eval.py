"""A safe calculator for arithmetic that agents write (the math task's tool agent).

`evaluate(text)` parses `text` with `ast` and walks the tree itself; nothing is ever passed to
`eval`/`exec`/`compile`. Allowed: int and decimal literals, binary `+ - * / // % **`, unary
minus, parentheses. Everything else (names, calls, attributes, lambdas, comparisons, strings,
exponent or hex literals, ...) is refused before or while walking the tree. Bounds keep every
evaluation fast (microseconds): at most `MAX_LENGTH` characters, every literal and every
intermediate value at most `MAX_ABS` in magnitude and finite, and `**` only with an integral
exponent of magnitude at most `MAX_EXPONENT`.

The result is the number (int, or float after `/` or a decimal literal), or an `EvalError`
saying why it failed; no input raises.
"""
from __future__ import annotations

import ast
import dataclasses
import math
import operator
import threading

MAX_LENGTH = 200
MAX_ABS = 10**12
MAX_EXPONENT = 10
_CHARS = frozenset("0123456789.+-*/%() ")
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
           ast.Pow: operator.pow}

Number = int | float
# CPython 3.11's AST constructor keeps a recursion count that concurrent `ast.parse` calls can
# corrupt ("SystemError: AST constructor recursion depth mismatch", CPython gh-106905); the
# rollout engine steps environments in threads, so parsing is serialised.
_PARSE_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class EvalError:
  """A failed evaluation: a parse error, a forbidden construct or an arithmetic error."""

  reason: str


class _Refused(Exception):
  pass


def evaluate(text: str) -> Number | EvalError:
  """The value of the arithmetic expression `text`, or an `EvalError` (see the module doc)."""
  if not isinstance(text, str):
    return EvalError("not a string")
  expression = text.strip()
  if not expression:
    return EvalError("empty expression")
  if len(expression) > MAX_LENGTH:
    return EvalError(f"longer than {MAX_LENGTH} characters")
  if not set(expression) <= _CHARS:
    return EvalError("forbidden character")
  try:
    tree = parse_expression(expression)
  except (SyntaxError, ValueError, MemoryError, RecursionError):
    return EvalError("syntax error")
  try:
    return _value(tree.body)
  except _Refused as e:
    return EvalError(str(e))
  except ZeroDivisionError:
    return EvalError("division by zero")
  except (OverflowError, RecursionError):
    return EvalError("number too large")


def parse_expression(text: str) -> ast.Expression:
  """`ast.parse(text, mode="eval")`, safe to call from several threads at once."""
  with _PARSE_LOCK:
    return ast.parse(text, mode="eval")


def _value(node: ast.AST) -> Number:
  if isinstance(node, ast.Constant):
    if type(node.value) not in (int, float):  # bool, complex, str, bytes, None, ...
      raise _Refused(f"forbidden literal {type(node.value).__name__}")
    return _bounded(node.value)
  if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
    return _bounded(-_value(node.operand))
  if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
    left, right = _value(node.left), _value(node.right)
    if isinstance(node.op, ast.Pow):
      if not float(right).is_integer() or abs(right) > MAX_EXPONENT:
        raise _Refused(f"exponent must be an integer of magnitude at most {MAX_EXPONENT}")
      right = int(right)
    return _bounded(_BINARY[type(node.op)](left, right))
  raise _Refused(f"forbidden {type(node).__name__}")


def _bounded(x: Number) -> Number:
  if type(x) not in (int, float) or abs(x) > MAX_ABS or not math.isfinite(x):
    raise _Refused(f"not a number of magnitude at most {MAX_ABS}")
  return x
