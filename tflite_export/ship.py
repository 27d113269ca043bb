"""Shipping a finished run's model: what the main job and the benchmarks
do after training, in one place.

  1. Units and channels that only hold zeros are zeroed and cut out
     (`tf_admm.dead_units`; a channel run is cut already).
  2. Biases are rounded to fixed point, if asked (`tf_admm.biases`).
  3. Every .tflite variant is written and scored on the test split
     (`tflite_export.report`), the packed file where the weights are on
     levels (falling back to dynamic_int8 where no kernel is on a grid),
     and a channel run's latency measured against the dense model's.
  4. With `micro`, the TFLite Micro file (`tflite_export.micro`): full
     int8, LUT-compressed, scored in the TFLM interpreter.
  5. final.keras, report.json and report.md are written (`tf_admm.report`).
"""

import os
import time
from typing import Callable, NamedTuple

import numpy as np
import tensorflow as tf

from tf_admm import biases
from tf_admm import dead_units
from tf_admm import report as report_lib
from tf_admm import run_files
from tf_admm import trainer
from tf_admm import weights as weights_lib
from tflite_export import converter
from tflite_export import micro as micro_lib
from tflite_export import report as tflite_report

LATENCY_RUNTIME = 'LiteRT float32 .tflite, 1 thread, batch 1, median'


class Shipped(NamedTuple):
  report: dict  # what report.json holds
  path: str  # of report.json
  table: str  # the .tflite variants, as report.md shows them


def _cut_dead_units(summary, data, log):
  """(shipped model, dead units removed, widths cut) of a weight run."""
  final = summary['final_model']
  removed = dead_units.remove_dead_units(final)
  for weight in weights_lib.prunable_weights(final):
    summary['final_masks'][weight.path] = np.logical_and(
        summary['final_masks'][weight.path], weight.variable.numpy() != 0)
  log('units that cannot affect the output, weights zeroed: ' + ', '.join(
      f'{name}: {r["dead"]} without input, {r["unused"]} unread, '
      f'{r["weights_zeroed"]} weights' for name, r in removed.items()))
  shipped, cut = dead_units.cut_out(final, data.x_val[:500])
  if cut:
    log('the .tflite files are made without the units and channels that '
        'only hold zeros: ' + ', '.join(
            f'{name} {before} -> {after}'
            for name, (before, after) in cut.items()))
  return shipped, removed, cut


def _round_biases(shipped, bias_bits, accuracy, data, log):
  """(shipped model with fixed-point biases, the report's bias_rounding,
  Keras test accuracy after)."""
  # A copy first: `shipped` may be the final model itself, which
  # final.keras keeps as trained.
  shipped = biases.units_sorted_by_bias(shipped)
  steps = biases.round_biases(shipped, bias_bits)
  rounding = {'bits': bias_bits, 'steps': steps,
              'accuracy_before': accuracy}
  accuracy = trainer.accuracy(shipped, data.x_test, data.y_test)
  log(f'biases shipped as {bias_bits}-bit fixed-point values, Dense units '
      f'ordered by bias: Keras test accuracy '
      f'{100 * rounding["accuracy_before"]:.2f}% -> {100 * accuracy:.2f}%')
  return shipped, rounding, accuracy


def ship(summary: dict, data, output_dir: str, info: dict,
         bias_bits: int = 0, start: float = None,
         log: Callable[[str], None] = print, micro: bool = False) -> Shipped:
  """Ships `summary` (`ProgressiveRun.run()`'s) into `output_dir`. `info`
  adds the report's facts about the run (dataset, model, command,
  settings, ...); `start` is when the run began (for its wall time);
  `micro` adds the TFLite Micro file and the report's `micro`."""
  channels = summary['shrunk'] is not None
  final = summary['final_model']
  shipped, removed, cut = final, {}, {}
  if not channels:  # a cut model has no dead units left
    shipped, removed, cut = _cut_dead_units(summary, data, log)
  accuracy = trainer.accuracy(final, data.x_test, data.y_test)
  bias_rounding = {}
  if bias_bits:
    shipped, bias_rounding, accuracy = _round_biases(shipped, bias_bits,
                                                     accuracy, data, log)
  folder = os.path.join(output_dir, 'tflite')
  test = tf.data.Dataset.from_tensor_slices((data.x_test, data.y_test))
  calibration = tf.data.Dataset.from_tensor_slices(data.x_train[:500])
  tflite = tflite_report.export_variants(
      shipped, test, calibration, dense_model=summary['dense_model'],
      output_dir=folder)
  variant = 'int8' if channels else 'int8_sparse'
  extras = {}
  if channels:
    extras = dict(
        macs=summary['shrunk']['macs'], params=summary['shrunk']['params'],
        latency_ms=tflite_report.latency_ms(
            {'dense': converter.convert(summary['dense_model']),
             'final': converter.convert(final)}, data.x_test[0]),
        latency_runtime=LATENCY_RUNTIME)
  if summary['quantized'] is not None:
    try:
      tflite.update(tflite_report.export_packed(
          shipped, test, tflite['dense']['gzip_bytes'], folder))
      variant = 'packed_weight_only'
      note = tflite_report.left_float_note(tflite)
      if note:
        log(note)
    except ValueError as error:  # no kernel on an integer grid (k-means)
      log(f'no packed file: {error} The report ships the dynamic_int8 file '
          'instead: its int8 weights approximate the levels and shrink under '
          'gzip only; its accuracy is LiteRT\'s.')
      variant = 'dynamic_int8'
  if micro:
    try:
      extras['micro'] = micro_lib.export_micro(
          shipped, data.x_test, data.y_test, calibration, folder)
      log(micro_lib.summary_line(extras['micro']))
    except ValueError as error:  # after training: report it, ship the rest
      extras['micro_error'] = str(error)
      log(f'no TFLite Micro file: {error}')
  run_files.write_atomically(os.path.join(output_dir, 'final.keras'),
                             final.save)
  report = report_lib.build(
      summary, tflite, variant, accuracy=accuracy,
      wall_seconds=time.time() - (start or time.time()),
      info=dict(info, dead_units=removed,
                shipped_widths={name: list(w) for name, w in cut.items()},
                bias_rounding=bias_rounding, **extras))
  table = tflite_report.format_table(tflite)
  return Shipped(report, report_lib.write(output_dir, report, table), table)


def summary_lines(shipped: Shipped) -> list:
  """The lines the main job prints about a shipped run."""
  report = shipped.report
  by_kind = {}
  for weight_path, config in report['constraints'].items():
    by_kind.setdefault(report_lib.constraint_kind(config), []).append(
        weight_path)
  holds = 'yes' if report['constraints_hold'] else 'NO'
  lines = ['constraints: none on the cut model, an ordinary dense network'
           if not by_kind else 'constraints: ' + '; '.join(
               f'{kind}: {", ".join(paths)}'
               for kind, paths in by_kind.items()) +
           f' (every one holds: {holds})']
  lines.append('not pruned: ' + (', '.join(
      f'{u["path"]} ({u["size"]:,})' for u in report['unpruned'])
                                 or 'nothing'))
  stored = report['storage']
  lines.append(
      f'weight data {stored["weight_data_bytes"]:,.0f} bytes '
      f'({stored["weight_data_reduction"]:,.0f}x smaller than float32), '
      f'{stored["with_index_bytes"]:,.0f} with sparse indices '
      f'({stored["with_index_reduction"]:,.0f}x); '
      f'{report["tflite"]["variant"]}.tflite '
      f'{stored["tflite"]["bytes"]:,} bytes as stored '
      f'({stored["tflite"]["gzip_bytes"]:,} gzipped), accuracy '
      f'{100 * stored["tflite"]["accuracy"]:.2f}%')
  if 'macs' in report:
    macs, params, latency = (report['macs'], report['params'],
                             report['latency_ms'])
    lines.append(
        f'MACs {macs["dense"]:,} -> {macs["final"]:,} '
        f'({macs["dense"] / macs["final"]:.1f}x fewer); parameters '
        f'{params["dense"]:,} -> {params["final"]:,}; float32 .tflite '
        f'latency {latency["dense"]:.3f} -> {latency["final"]:.3f} ms '
        f'({latency["dense"] / latency["final"]:.1f}x faster; '
        f'{report["latency_runtime"]})')
  lines.append(
      f'{report["compression_rate"]:.1f}x over the prunable weights '
      f'({report["model_compression_rate"]:.1f}x over the whole model) at '
      f'test accuracy {100 * report["accuracy"]:.2f}% (dense '
      f'{100 * report["dense_accuracy"]:.2f}%), {report["epochs"]} epochs, '
      f'{report["wall_seconds"]:.0f} s. Report: {shipped.path}')
  return lines
