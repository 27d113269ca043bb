"""The report of a progressive run: report.json, report.md and PNG plots."""

import os

import matplotlib

matplotlib.use('Agg')  # files only; no display
# pylint: disable=g-import-not-at-top,wrong-import-position
from matplotlib import pyplot as plt

import numpy as np

from tf_admm import constraints as constraints_lib
from tf_admm import run_files
from tf_admm import run_steps
from tf_admm import storage
from tf_admm import weights as weights_lib

COMPRESSION_RATE_COUNTS = ('the prunable weights: kernels of Dense and '
                           'convolution layers, depthwise and pointwise '
                           'kernels, embeddings; not biases or normalization')


def build(summary: dict, tflite: dict, tflite_variant: str,
          accuracy: float, wall_seconds: float, info: dict) -> dict:
  """The report's content: `info` (dataset, model, command, ...) first."""
  final = summary['final_model']
  last = summary['quantized'] or (summary['stages'] or [{}])[-1]
  # A model cut down to its kept channels is an ordinary dense one: no
  # pruning constraint applies to its new shapes (its levels, if quantized
  # after the cut, do).
  configs = ({} if summary.get('shrunk') and not summary['quantized']
             else last.get('constraints', {}))
  # Rates count against the dense model, whose shapes a cut model lacks.
  sizes = {path: size for path, (size, _) in
           run_steps.nonzero_counts(summary['dense_model']).items()}
  counts = {path: (sizes[path], nonzero) for path, (_, nonzero) in
            run_steps.nonzero_counts(final).items()}
  total = sum(t for t, _ in counts.values())
  nonzero = sum(n for _, n in counts.values())
  model_total = sum(int(np.prod(v.shape))
                    for v in summary['dense_model'].weights)
  model_nonzero = sum(int(np.count_nonzero(v.numpy())) for v in final.weights)
  return dict(
      info,
      dense_accuracy=summary['dense_metrics']['test_accuracy'],
      accuracy=accuracy,
      compression_rate=total / nonzero,
      compression_rate_counts=COMPRESSION_RATE_COUNTS,
      total_weights=total,
      nonzero_weights=nonzero,
      model_compression_rate=model_total / model_nonzero,
      layers=[{'name': n, 'total': t, 'nonzero': z}
              for n, (t, z) in counts.items()],
      unpruned=weights_lib.unpruned_weights(final, summary['final_masks']),
      constraints=configs,
      constraints_hold=constraints_hold(final, summary['final_masks'],
                                        configs),
      storage=dict(
          weight_storage(final, configs, dense_entries=total),
          tflite={key: tflite[tflite_variant][key]
                  for key in ('bytes', 'gzip_bytes', 'accuracy')},
          tflite_variant=tflite_variant),
      epochs=summary['epochs'],
      train_seconds=summary['train_seconds'],
      wall_seconds=wall_seconds,
      tflite={
          'variant': tflite_variant,
          'bytes': tflite[tflite_variant]['bytes'],
          'gzip_bytes': tflite[tflite_variant]['gzip_bytes'],
          'accuracy': tflite[tflite_variant]['accuracy'],
          'dense_bytes': tflite['dense']['bytes'],
          'dense_gzip_bytes': tflite['dense']['gzip_bytes'],
      },
      tflite_variants=tflite,
      stages=summary['stages'],
      quantized=summary['quantized'],
      shrunk=summary.get('shrunk'),
      candidates=summary['candidates'],
  )


def weight_storage(model, configs, dense_entries=None) -> dict:
  """`tf_admm.storage.model_storage` of the prunable weights, at the bits
  of their serialized constraints (32 where a weight has no levels)."""
  bits = {}
  for path, config in configs.items():
    constraint = constraints_lib.deserialize(config)
    bits[path] = getattr(constraint, 'storage_bits', None)
  return storage.model_storage(
      {w.path: w.variable.numpy()
       for w in weights_lib.prunable_weights(model)}, bits, dense_entries)


def constraint_kind(config) -> str:
  """'NOutOfM' for a serialized tf_admm.constraints.NOutOfM; 'none'."""
  return config['class_name'] if config else 'none'


def constraints_hold(model, masks, configs) -> bool:
  """Whether every pruned weight of `model` lies in its constraint's set
  within its mask: projecting it changes nothing."""
  weights = {w.path: w.variable.numpy()
             for w in weights_lib.prunable_weights(model)}
  for path, config in configs.items():
    constraint = constraints_lib.deserialize(config)
    allowed = int(np.count_nonzero(masks[path]))
    if constraint.keep is not None and constraint.keep > allowed:
      # Masks narrowed after training (tf_admm.dead_units) keep fewer.
      constraint = constraint.with_keep(allowed)
    projected = constraint.project(weights[path], masks[path]).values
    # Levels refitted to weights already on them agree to float rounding.
    tolerance = 8 * np.finfo(np.float32).eps if (
        constraint.levels_shape(weights[path].shape)) else 0
    if not np.allclose(projected, weights[path], rtol=tolerance, atol=0):
      return False
  return True


def _plot_accuracy(report, path):
  fig, ax = plt.subplots(figsize=(6, 4))
  candidates = report['candidates']
  ax.scatter([c['rate'] for c in candidates],
             [100 * c['test_accuracy'] for c in candidates], s=12,
             color='0.7', label='every candidate')
  stages = report['stages']
  ax.plot([1] + [s['rate'] for s in stages],
          [100 * report['dense_accuracy']] +
          [100 * s['test_accuracy'] for s in stages], 'o-',
          label='best candidate per stage')
  ax.set_xscale('log')
  ax.set_xlabel('compression rate (prunable weights / nonzero)')
  ax.set_ylabel('test accuracy (%)')
  ax.set_title(f'{report["model"]} on {report["dataset"]}')
  ax.grid(True, which='both', alpha=0.3)
  ax.legend()
  fig.tight_layout()
  _save_figure(fig, path)


def _plot_layers(report, path):
  fig, ax = plt.subplots(figsize=(6, 4))
  names = [l['name'] for l in report['layers']]
  ax.bar(names, [l['total'] for l in report['layers']], color='0.8',
         label='weights')
  ax.bar(names, [l['nonzero'] for l in report['layers']], label='kept')
  for i, layer in enumerate(report['layers']):
    ax.annotate(f'{layer["nonzero"]:,}\n({100 * layer["nonzero"] / layer["total"]:.1f}%)',
                (i, layer['nonzero']), ha='center', va='bottom', fontsize=8)
  ax.set_yscale('log')
  ax.set_ylabel('weights')
  ax.set_title('kept weights per layer')
  ax.legend()
  fig.tight_layout()
  _save_figure(fig, path)


def _markdown(report, table):
  lines = [
      f'# {report["model"]} on {report["dataset"]}: '
      f'{report["compression_rate"]:.1f}x at {100 * report["accuracy"]:.2f}%',
      '',
      f'Command: `{report["command"]}`',
      '',
      f'- dense test accuracy: {100 * report["dense_accuracy"]:.2f}%',
      f'- pruned test accuracy: {100 * report["accuracy"]:.2f}%',
  ]
  if report.get('bias_rounding'):
    rounding = report['bias_rounding']
    lines.append(f'- the pruned test accuracy is the shipped model\'s, with '
                 f'{rounding["bits"]}-bit fixed-point biases '
                 '(tf_admm.biases); final.keras keeps float32 biases: '
                 f'{100 * rounding["accuracy_before"]:.2f}%')
  lines += [
      f'- prunable weights: {report["nonzero_weights"]:,} of '
      f'{report["total_weights"]:,} ({report["compression_rate"]:.1f}x; '
      f'{report["compression_rate_counts"]})',
      f'- the whole model, biases and all: '
      f'{report["model_compression_rate"]:.1f}x',
      f'- weight data: {report["storage"]["weight_data_bytes"]:,.0f} bytes, '
      f'{report["storage"]["weight_data_reduction"]:,.0f}x smaller than '
      f'float32; with sparse indices {report["storage"]["with_index_bytes"]:,.0f}'
      f' bytes ({report["storage"]["with_index_reduction"]:,.0f}x; '
      f'{report["storage"]["index_encoding"]})',
      f'- shipped file ({report["storage"]["tflite_variant"]}): '
      f'{report["storage"]["tflite"]["bytes"]:,} bytes, '
      f'{report["storage"]["tflite"]["gzip_bytes"]:,} gzipped, LiteRT '
      f'accuracy {100 * report["storage"]["tflite"]["accuracy"]:.2f}%',
      f'- every pruned weight lies in its constraint\'s set: '
      f'{"yes" if report["constraints_hold"] else "NO"}',
      '- not pruned: ' + (', '.join(u['path'] for u in report['unpruned'])
                          or 'nothing'),
      f'- training epochs: {report["epochs"]}; training time '
      f'{report["train_seconds"]:.0f} s; this invocation '
      f'{report["wall_seconds"]:.0f} s',
      '',
      '| stage | target | reached | val accuracy | test accuracy | epochs |'
      ' seconds |',
      '|---:|---:|---:|---:|---:|---:|---:|',
  ]
  for s in report['stages']:
    lines.append(f'| {s["stage"] + 1} | {s["target_rate"]:.1f}x | '
                 f'{s["rate"]:.1f}x | {s["val_accuracy"]:.4f} | '
                 f'{s["test_accuracy"]:.4f} | {s["epochs"]} | '
                 f'{s["seconds"]:.0f} |')
  # In the order the run makes them: cut, then quantized.
  for label, unit in (('cut and fine-tuned', report.get('shrunk')),
                      ('quantized', report['quantized'])):
    if unit:
      lines.append(f'| {label} | - | {unit["rate"]:.1f}x | '
                   f'{unit["val_accuracy"]:.4f} | '
                   f'{unit["test_accuracy"]:.4f} | {unit["epochs"]} | '
                   f'{unit["seconds"]:.0f} |')
  if report.get('shrunk'):
    cut, latency = report['shrunk'], report['latency_ms']
    lines += ['', f'- MACs: {report["macs"]["dense"]:,} dense, '
              f'{report["macs"]["final"]:,} cut '
              f'({report["macs"]["dense"] / report["macs"]["final"]:.1f}x '
              f'fewer); channels kept: ' + ', '.join(
                  f'{layer} {after} of {before}'
                  for layer, (before, after) in cut['channels'].items()),
              f'- latency ({report["latency_runtime"]}): '
              f'{latency["dense"]:.3f} ms dense, {latency["final"]:.3f} ms '
              f'cut ({latency["dense"] / latency["final"]:.1f}x faster)']
  if report.get('micro'):
    micro = report['micro']
    lines += ['', f'- TFLite Micro file (tflite/micro.tflite): '
              f'{micro["flash_bytes"]:,} bytes of flash, '
              f'{micro["arena_bytes"]:,} bytes of arena, TFLM test accuracy '
              f'{100 * micro["accuracy"]:.2f}%; LUT index bits: ' + ', '.join(
                  f'{name} {bits or "int8"}'
                  for name, bits in micro['lut_bits'].items())]
  if report.get('micro_error'):
    lines += ['', f'- no TFLite Micro file: {report["micro_error"]}']
  lines += ['', '| weight | entries | kept | constraint | bits | index bits |',
            '|---|---:|---:|---|---:|---:|']
  stored = report['storage']['weights']
  lines += [f'| {l["name"]} | {l["total"]:,} | {l["nonzero"]:,} | '
            f'{constraint_kind(report["constraints"].get(l["name"]))} | '
            f'{stored[l["name"]]["bits"]} | {stored[l["name"]]["index_bits"]} |'
            for l in report['layers']]
  lines += ['', '## TFLite', '', table, '',
            '![accuracy](accuracy_vs_compression.png)',
            '![layers](kept_weights.png)', '']
  return '\n'.join(lines)


def _save_figure(fig, path):
  run_files.write_atomically(path, lambda temporary: fig.savefig(temporary,
                                                                 dpi=100))
  plt.close(fig)


def write(output_dir: str, report: dict, table: str) -> str:
  """Writes report.json, report.md and the plots; returns report.json's path."""
  _plot_accuracy(report, os.path.join(output_dir, 'accuracy_vs_compression.png'))
  _plot_layers(report, os.path.join(output_dir, 'kept_weights.png'))
  run_files.write_bytes(os.path.join(output_dir, 'report.md'),
                        _markdown(report, table).encode())
  path = os.path.join(output_dir, 'report.json')
  run_files.write_json(path, report)
  return path
