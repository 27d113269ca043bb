"""Checks that a user's argument is a number of the kind asked for, with
one message form: a string, a bool, NaN or an infinity is refused by name
before any work (Python's own errors name neither the argument nor the
fix)."""

import math
import numbers


def finite_number(name: str, value) -> float:
  """`value` if it is a finite real number (not a bool); else ValueError
  naming `name`."""
  if (isinstance(value, bool) or not isinstance(value, numbers.Real) or
      not math.isfinite(value)):
    raise ValueError(f'{name} must be a finite number, got {value!r}.')
  return value


def whole_number(name: str, value) -> int:
  """`value` if it is an integer (not a bool); else ValueError naming
  `name`."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise ValueError(f'{name} must be a whole number, got {value!r}.')
  return value
