"""Running .tflite files in the TensorFlow Lite for Microcontrollers (TFLM)
interpreter of the `tflite-micro` package (published for Linux x86_64 only:
elsewhere this module imports, and its functions say how to get it): test
outputs as a device computes them, the arena it needs, the scales of its
int8 inputs and outputs."""

import contextlib
import os
import re
import sys
import tempfile
from typing import Callable

import numpy as np

from tflite_export import evaluate

_MISSING = ('TFLite Micro export needs the tflite-micro package, which is '
            'published for Linux x86_64 only (pip install tflite-micro, '
            'pinned in constraints.txt).')


def modules():
  """(runtime, compression, spec) modules of tflite-micro; ValueError
  saying how to get them where it is not installed."""
  try:
    # pylint: disable=import-outside-toplevel
    from tflite_micro import compression
    from tflite_micro import runtime
    # The spec's dataclasses: `compression.parse_yaml` builds the same
    # objects from YAML; building them directly skips a YAML round trip.
    from tflite_micro.tensorflow.lite.micro.compression import spec
  except ImportError:
    raise ValueError(_MISSING) from None
  return runtime, compression, spec


def check_available() -> None:
  """Raises ValueError, saying how to install it, if tflite-micro is not
  installed: call it before work a TFLM export would end."""
  modules()


@contextlib.contextmanager
def _stderr_to(path: str):
  """Sends the process's stderr (where the interpreter's C++ code
  prints) to `path` while inside."""
  sys.stderr.flush()
  saved = os.dup(2)
  with open(path, 'wb') as target:
    os.dup2(target.fileno(), 2)
  try:
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


def _printed(call: Callable[[], object]) -> tuple:
  """(call()'s result, the error it raised, what TFLM printed meanwhile):
  the result or the error is None."""
  result = error = None
  with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, 'stderr')
    with _stderr_to(path):
      try:
        result = call()
      except Exception as raised:  # pylint: disable=broad-except
        # The interpreter raises RuntimeError; reading a damaged flatbuffer
        # before it, struct.error or IndexError.
        error = raised
    with open(path, 'rb') as f:
      return result, error, f.read().decode(errors='replace')


# What TFLM prints when the arena is too small for the model.
_ARENA_FAILURES = ('Failed to allocate', 'Failed to resize buffer')
_ARENA_TOTAL = re.compile(r'Arena allocation total (\d+) bytes')


def _interpreter(content: bytes):
  """A TFLM interpreter of `content` in an arena large enough: ten times
  the file, at least 1 MiB, doubled until it allocates (too small an arena
  can crash the interpreter instead of failing, so none is tried). Raises
  ValueError with TFLM's message where the file cannot run."""
  runtime, _, _ = modules()
  size = max(10 * len(content), 1 << 20)
  while True:
    interpreter, error, printed = _printed(
        lambda: runtime.Interpreter.from_bytes(content, arena_size=size))
    if error is None:
      return interpreter
    if not any(failure in printed for failure in _ARENA_FAILURES) or (
        size >= 1 << 30):
      raise ValueError(f'The TFLM interpreter cannot run the file: '
                       f'{printed.strip() or error}')
    size *= 2


def arena_bytes(content: bytes) -> int:
  """The tensor arena the TFLM interpreter uses to run `content`: the RAM a
  device gives it (TFLM's RecordingMicroAllocator's total, after one
  inference)."""
  interpreter = _interpreter(content)
  details = interpreter.get_input_details(0)
  interpreter.set_input(np.zeros(details['shape'], details['dtype']), 0)
  interpreter.invoke()
  _, _, printed = _printed(interpreter.print_allocations)
  total = _ARENA_TOTAL.search(printed)
  if total is None:
    raise ValueError('The TFLM interpreter printed no arena total: '
                     f'{printed.strip()!r}')
  return int(total.group(1))


def _quantization(details) -> tuple:
  """(scale, zero point) of a TFLM interpreter's input or output."""
  parameters = details['quantization_parameters']
  return (float(parameters['scales'][0]),
          int(parameters['zero_points'][0]))


def io_quantization(content: bytes) -> dict:
  """{'input': {scale, zero_point}, 'output': {...}} of `content`'s first
  input and output: how a device quantizes its inputs (q = x / scale +
  zero_point) and reads its outputs back."""
  interpreter = _interpreter(content)
  return {side: dict(zip(('scale', 'zero_point'), _quantization(details)))
          for side, details in (
              ('input', interpreter.get_input_details(0)),
              ('output', interpreter.get_output_details(0)))}


def predict(content: bytes, x: np.ndarray) -> np.ndarray:
  """The TFLM interpreter's outputs (as stored: int8 for an int8 file) for
  each example of `x`, run one at a time as a device runs them."""
  interpreter = _interpreter(content)
  details = interpreter.get_input_details(0)
  inputs = evaluate.to_input_type(
      {'dtype': details['dtype'], 'quantization': _quantization(details)}, x)
  outputs = []
  for example in inputs:
    interpreter.set_input(example[None], 0)
    interpreter.invoke()
    outputs.append(interpreter.get_output(0)[0].copy())
  return np.stack(outputs)
