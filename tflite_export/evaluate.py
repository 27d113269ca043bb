"""Running a .tflite model with the LiteRT interpreter."""

import time
from typing import Optional

import numpy as np
import tensorflow as tf
from ai_edge_litert import interpreter as litert

# LiteRT's default XNNPACK delegate fails to prepare sparse-encoded int8
# tensors; the built-in kernels run them.
RUNTIMES = {
    'xnnpack': litert.OpResolverType.AUTO,
    'builtin': litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
}


def prepared_interpreter(model_content: bytes, batch_shape,
                         num_threads: Optional[int] = None,
                         runtime: Optional[str] = None):
  """(interpreter, runtime name), allocated for inputs of `batch_shape`.

  Tries the default runtime (XNNPACK) first and falls back to the built-in
  kernels when the delegate cannot run the model; `runtime` (a key of
  RUNTIMES) asks for one.
  """
  if runtime not in (None, *RUNTIMES):
    raise ValueError(f'Unknown runtime {runtime!r}; choose one of '
                     f'{", ".join(RUNTIMES)}.')
  for name, resolver in RUNTIMES.items():
    if runtime not in (None, name):
      continue
    interpreter = litert.Interpreter(
        model_content=model_content, num_threads=num_threads,
        experimental_op_resolver_type=resolver)
    inputs = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inputs['index'], batch_shape)
    try:
      interpreter.allocate_tensors()
      # A graph that computes shapes (Keras 3's Flatten) prepares the
      # delegate at its first run, not at allocation: run zeros (a valid
      # image and a valid token id).
      interpreter.set_tensor(inputs['index'],
                             np.zeros(batch_shape, inputs['dtype']))
      interpreter.invoke()
    except RuntimeError as error:
      if name == 'xnnpack' and 'delegate' in str(error):
        continue
      raise
    return interpreter, name
  raise AssertionError('unreachable: the built-in runtime raises or returns')


def to_input_type(details, x):
  """`x` as the interpreter's input: quantized where the model quantized a
  float input, else cast (token ids stay ids)."""
  scale, zero_point = details['quantization']
  if scale == 0:  # not a quantized float: float, or integer ids
    return x.astype(details['dtype'])
  info = np.iinfo(details['dtype'])
  return np.clip(np.round(x / scale + zero_point), info.min,
                 info.max).astype(details['dtype'])


def predict(model_content: bytes,
            dataset: tf.data.Dataset,
            batch_size: int = 250,
            num_threads: Optional[int] = None,
            runtime: Optional[str] = None):
  """(outputs, labels, runtime) of a .tflite model over (x, y) pairs.

  The dataset may be batched or not; it is run in batches of `batch_size`
  (the last one padded) so the interpreter is allocated once, or of the
  file's own batch size where it has one (a recurrent model's); `runtime`
  as `prepared_interpreter`'s.
  """
  details = litert.Interpreter(
      model_content=model_content).get_input_details()[0]
  model_rank = len(details['shape'])
  fixed_batch = details['shape_signature'][0] > 0
  if fixed_batch:
    batch_size = int(details['shape_signature'][0])
  if dataset.element_spec[0].shape.rank == model_rank:  # already batched
    dataset = dataset.unbatch()
  example_shape = tuple(dataset.element_spec[0].shape)
  interpreter, runtime = prepared_interpreter(
      model_content, (batch_size,) + example_shape, num_threads, runtime)
  input_details = interpreter.get_input_details()[0]
  output_index = interpreter.get_output_details()[0]['index']
  outputs, labels = [], []
  for x, y in dataset.batch(batch_size).as_numpy_iterator():
    count = len(x)
    if count < batch_size:
      x = np.concatenate([x, np.zeros((batch_size - count,) + x.shape[1:],
                                      x.dtype)])
    if fixed_batch:  # a fused LSTM keeps its state between invocations
      interpreter.reset_all_variables()
    interpreter.set_tensor(input_details['index'],
                           to_input_type(input_details, x))
    interpreter.invoke()
    outputs.append(interpreter.get_tensor(output_index)[:count].copy())
    labels.append(y)
  return np.concatenate(outputs), np.concatenate(labels), runtime


def top1_hits(outputs, labels) -> np.ndarray:
  """Per example: is its largest output at its label?"""
  return np.argmax(outputs, axis=-1) == labels


def top1_accuracy(outputs, labels) -> float:
  return float(np.mean(top1_hits(outputs, labels)))


def accuracy(model_content: bytes, dataset: tf.data.Dataset,
             **kwargs) -> float:
  """Top-1 accuracy of a .tflite classifier on (x, y) pairs."""
  outputs, labels, _ = predict(model_content, dataset, **kwargs)
  return top1_accuracy(outputs, labels)


def latency_seconds(model_content: bytes, example: np.ndarray,
                    runs: int = 200, num_threads: int = 1):
  """(median seconds of one single-example inference, runtime name)."""
  interpreter, runtime = prepared_interpreter(
      model_content, (1,) + example.shape, num_threads)
  details = interpreter.get_input_details()[0]
  interpreter.set_tensor(details['index'],
                         to_input_type(details, example[None]))
  for _ in range(10):  # warm-up
    interpreter.invoke()
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    interpreter.invoke()
    times.append(time.perf_counter() - start)
  return float(np.median(times)), runtime
