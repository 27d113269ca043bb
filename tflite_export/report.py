"""Every deployment variant of a pruned model: size and accuracy side by side."""

import gzip
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from tf_admm import run_files
from tflite_export import converter
from tflite_export import evaluate
from tflite_export import packed

Quantization = converter.Quantization


def sizes(model_content: bytes) -> dict:
  """{'bytes': raw size, 'gzip_bytes': size after gzip -9}: what ships."""
  return {'bytes': len(model_content),
          'gzip_bytes': len(gzip.compress(model_content, compresslevel=9,
                                          mtime=0))}


def variant_name(quantization: Quantization, sparse: bool) -> str:
  return Quantization(quantization).value + ('_sparse' if sparse else '')


def export_variants(model,
                    test_data: tf.data.Dataset,
                    representative_data: tf.data.Dataset,
                    dense_model=None,
                    quantizations=tuple(Quantization),
                    output_dir: Optional[str] = None) -> dict:
  """Converts `model` every requested way and measures each result.

  Args:
    model: a stripped (plain) classifier of either Keras.
    test_data: (x, y) pairs, batched or not, for accuracy.
    representative_data: calibration inputs for full int8.
    dense_model: the unpruned model, converted to float32 as the reference.
      None uses `model` itself without sparse encoding.
    quantizations: which `Quantization`s to produce; each comes dense and
      sparse-encoded.
    output_dir: where to write the .tflite files (not written if None).

  Returns:
    {'dense': {bytes, gzip_bytes, accuracy, runtime}, '<variant>': {bytes,
     gzip_bytes, accuracy, runtime, gzip_ratio}}: gzip_ratio is dense gzip /
    variant gzip; runtime is the LiteRT runtime that ran it ('xnnpack', or
    'builtin' where the XNNPACK delegate refused the model).
  """
  reference = converter.convert(dense_model if dense_model is not None
                                  else model)
  results = {'dense': _measure(reference, test_data)}
  for quantization in quantizations:
    for sparse in (False, True):
      name = variant_name(quantization, sparse)
      content = converter.convert(model, quantization, sparse,
                                    representative_data)
      if output_dir:
        write_tflite(os.path.join(output_dir, name + '.tflite'), content)
      results[name] = _measure(content, test_data)
      results[name]['gzip_ratio'] = (results['dense']['gzip_bytes'] /
                                     results[name]['gzip_bytes'])
  return results


def export_packed(model, test_data: tf.data.Dataset, dense_gzip_bytes: int,
                  output_dir: Optional[str] = None) -> dict:
  """The packed variants (`tflite_export.packed`) of a quantized model,
  measured like `export_variants`' (plus `packed_bits`: {weight: 2, 4 or
  8}, and `float_kernels`: the kernels left float32, each named by the
  model's weight path where one weight holds its values, else by its
  tensor name). Raises ValueError if no kernel can be packed."""
  float_content = converter.convert(model)
  paths = packed.weight_paths(float_content, model)
  results = {}
  for mode in packed.PackMode:
    result = packed.pack(float_content, mode)
    name = 'packed_' + mode.value
    if output_dir:
      write_tflite(os.path.join(output_dir, name + '.tflite'), result.content)
    results[name] = dict(
        _measure(result.content, test_data),
        packed_bits={paths.get(n, n): b for n, b in result.bits.items()},
        float_kernels=[paths.get(n, n) for n in result.float_kernels])
    results[name]['gzip_ratio'] = dense_gzip_bytes / results[name][
        'gzip_bytes']
  return results


def left_float_note(results: dict) -> str:
  """A line naming the kernels `export_packed`'s files keep float32 (no
  integer grid of 8 bits or less holds them, or their op is not packed);
  '' where there are none."""
  left = results.get('packed_weight_only', {}).get('float_kernels')
  if not left:
    return ''
  return ('The packed files keep these kernels float32 (on no integer grid '
          f'of up to 8 bits, or of an op packing skips): {", ".join(left)}')


def latency_ms(contents: dict, example, runs: int = 300,
               repeats: int = 5) -> dict:
  """{name: median milliseconds of one inference on `example`} for each
  .tflite content, LiteRT on 1 thread, measured in turns in this process
  (`repeats` turns of `runs` inferences each) so drift hits all alike."""
  times = {name: [] for name in contents}
  for _ in range(repeats):
    for name, content in contents.items():
      seconds, _ = evaluate.latency_seconds(content, np.asarray(example),
                                            runs=runs, num_threads=1)
      times[name].append(1000 * seconds)
  return {name: float(np.median(values)) for name, values in times.items()}


def _measure(content, test_data):
  outputs, labels, runtime = evaluate.predict(content, test_data)
  return dict(sizes(content), runtime=runtime,
              accuracy=evaluate.top1_accuracy(outputs, labels))


def write_tflite(path, content):
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  run_files.write_bytes(path, content)


def format_table(results: dict) -> str:
  """A Markdown table of `export_variants` results."""
  lines = ['| variant | bytes | gzip bytes | gzip vs dense | accuracy | '
           'runtime |', '|---|---:|---:|---:|---:|---|']
  for name, r in results.items():
    ratio = f'{r["gzip_ratio"]:.1f}x' if 'gzip_ratio' in r else '1.0x'
    lines.append(f'| {name} | {r["bytes"]:,} | {r["gzip_bytes"]:,} | {ratio} '
                 f'| {r["accuracy"]:.4f} | {r["runtime"]} |')
  return '\n'.join(lines)
