"""Level families: the sets of values a quantized weight's kept entries may
take (`tf_admm.constraints.Quantize`), each a class declaring its levels'
fit, count and storage bits. A new family is one subclass, registered in
`LEVEL_FAMILIES` under the name `Quantize` takes."""

import abc
from typing import Optional

import numpy as np

from tf_admm import projections


class LevelFamily(abc.ABC):
  """A family of level sets: the values each channel's kept weights may
  take, given `bits` where the family has a size to choose. A new family is
  one subclass, registered in `LEVEL_FAMILIES` under its name."""

  takes_bits = False

  def check_bits(self, name: str, bits) -> None:
    if self.takes_bits and not (isinstance(bits, int) and 1 <= bits <= 8):
      raise ValueError(f'Quantize({name!r}) needs bits, an integer from 1 '
                       f'to 8; got {bits!r}.')
    if not self.takes_bits and bits is not None:
      raise ValueError(f'Quantize({name!r}) has fixed levels; give no bits '
                       f'(got {bits}).')

  def codes(self, bits) -> Optional[tuple]:
    """The non-negative level multiples of one scale q, for a family on a
    symmetric grid (None for others)."""
    del bits
    return None

  def level_count(self, bits) -> int:
    codes = self.codes(bits)
    return len(codes) * 2 - (codes[0] == 0)

  def storage_bits(self, bits) -> int:
    """Bits that name a nonzero entry's level, in the papers' terms (where
    the zeros are is the sparse index's job)."""
    codes = self.codes(bits)
    nonzero_levels = self.level_count(bits) - int(bool(codes) and
                                                  codes[0] == 0)
    return max(1, (nonzero_levels - 1).bit_length())

  def fit(self, weights, bits, axis, allowed) -> np.ndarray:
    """The least-squares levels (per channel along `axis`) of the allowed
    entries."""
    return projections.uniform_levels(weights, self.codes(bits), axis,
                                      allowed)


class Uniform(LevelFamily):
  """{±1, ..., ±L} * q, L = 2**(bits - 1) (0 is kept for pruned weights)."""
  takes_bits = True

  def codes(self, bits):
    return tuple(range(1, 2**(bits - 1) + 1))


class Ternary(LevelFamily):
  """{-q, 0, +q}."""

  def codes(self, bits):
    return (0, 1)


class Binary(LevelFamily):
  """{-q, +q}: uniform at 1 bit."""

  def codes(self, bits):
    return (1,)


class KMeans(LevelFamily):
  """2**bits levels placed by 1-D k-means over the kept entries."""
  takes_bits = True

  def level_count(self, bits):
    return 2**bits

  def fit(self, weights, bits, axis, allowed):
    return projections.kmeans_levels(weights, self.level_count(bits), axis,
                                     allowed)


LEVEL_FAMILIES = {'uniform': Uniform(), 'ternary': Ternary(),
                  'binary': Binary(), 'kmeans': KMeans()}
LEVEL_KINDS = tuple(LEVEL_FAMILIES)
