"""Renders benchmarks/reports/<study>.md from benchmarks/results/.

  python benchmarks/render.py

Each result lives in benchmarks/results/<study>/<variant>/seed<N>/, as its
script wrote it, with an entry in benchmarks/results/manifest.json (its
command, commit, machine and date). This only tabulates them: for each
variant, its key numbers per seed with their mean and spread (min to max),
then each result in detail. The words come from the ABOUT.md files written
by hand beside the results (one per study, one per variant where needed).
"""

import argparse
import json
import math
import os
import statistics

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, 'results')
REPORTS = os.path.join(HERE, 'reports')
STUDIES = {
    'progressive': 'Progressive ADMM runs of the main job',
    'tfmot_magnitude': 'tf-admm against tfmot magnitude pruning',
    'collaborative': 'tf-admm against tfmot collaborative optimization',
    'l1_filters': 'Channel ADMM against L1-norm filter pruning',
}


# Reading the tree.


def _read_json(*parts):
  with open(os.path.join(*parts)) as f:
    return json.load(f)


def _about(*parts):
  """The hand-written ABOUT.md in `parts`, as lines; none if absent."""
  path = os.path.join(RESULTS, *parts, 'ABOUT.md')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return f.read().strip().split('\n') + ['']


def _variants(study):
  """{variant: [(seed, folder relative to RESULTS)]}, sorted."""
  found = {}
  for variant in sorted(os.listdir(os.path.join(RESULTS, study))):
    folder = os.path.join(RESULTS, study, variant)
    if os.path.isdir(folder):
      seeds = sorted(int(name[len('seed'):]) for name in os.listdir(folder)
                     if name.startswith('seed'))
      found[variant] = [(seed, f'{study}/{variant}/seed{seed}')
                        for seed in seeds]
  return found


def _manifest():
  """manifest.json's entries by folder relative to RESULTS."""
  entries = _read_json(RESULTS, 'manifest.json')['results']
  prefix = 'benchmarks/results/'
  return {entry['path'][len(prefix):]: entry for entry in entries}


def _link(folder, name):
  return f'[{name}](../results/{folder}/{name})'


# Formats.


def _pct(x):
  return f'{100 * x:.2f}%'


def _times(x):
  return f'{x:.1f}x'


def _floor_times(x):
  return f'{math.floor(100 * x) / 100:.2f}x'


def _count(x):
  return f'{x:,.0f}'


def _points(x):
  return f'{x:+.2f}'


def _ms(x):
  return f'{x:.3f}'


def _one(x):
  return f'{x:.1f}'


def _machine(machine):
  if isinstance(machine, str):
    return machine
  words = (f'{machine["cpus"]} CPUs ({machine["processor"]}, '
           f'{machine["platform"]}), Python {machine["python"]}, TensorFlow '
           f'{machine["tensorflow"]}')
  return words + (f', tfmot {machine["tfmot"]}' if 'tfmot' in machine else '')


def _provenance(entry):
  return (f'Command: `{entry["command"]}`. Committed at `{entry["commit"][:7]}`'
          f' ({entry["date"]}); machine: {_machine(entry["machine"])}.')


# The per-seed table.


def _table(header, rows):
  return ['| ' + ' | '.join(header) + ' |',
          '|' + '|'.join('---' if i == 0 else '---:'
                         for i in range(len(header))) + '|'] + [
              '| ' + ' | '.join(row) + ' |' for row in rows]


def _stats_rows(case, values, columns):
  """The mean and the spread (min to max) of each column over the seeds."""
  mean, spread = [], []
  for label, fmt in columns:
    numbers = [v[label] for v in values if v.get(label) is not None]
    mean.append(fmt(statistics.fmean(numbers)) if numbers else '-')
    spread.append(f'{fmt(min(numbers))} to {fmt(max(numbers))}'
                  if numbers else '-')
  return [case + ['mean'] + mean, case + ['min to max'] + spread]


def seed_table(cases, columns):
  """`cases`: [(case label or None, [(seed, {column label: number})])];
  `columns`: [(label, format)]. One line per seed, then under a case with
  more than one seed its mean and spread."""
  labelled = any(case is not None for case, _ in cases)
  rows = []
  for case, seeds in cases:
    first = [case] if labelled else []
    for seed, values in seeds:
      rows.append(first + [f'seed{seed}'] + [
          '-' if values.get(label) is None else fmt(values[label])
          for label, fmt in columns])
    if len(seeds) > 1:
      rows += _stats_rows(first, [v for _, v in seeds], columns)
  header = (['case'] if labelled else []) + ['seed'] + [
      label for label, _ in columns]
  return _table(header, rows) + ['']


def _used(columns, values):
  """The columns some seed has a number for."""
  return [(label, fmt) for label, fmt in columns
          if any(v.get(label) is not None for v in values)]


# progressive: the main job's report.json files.


def _progressive_values(report):
  values = {'rate': report['compression_rate'],
            'test accuracy': report['accuracy'],
            'TFLite bytes': report['tflite']['bytes'],
            'TFLite gzip bytes': report['tflite']['gzip_bytes'],
            'epochs': report['epochs'],
            'training min': report['train_seconds'] / 60}
  if report.get('shrunk'):
    values['fewer MACs'] = report['macs']['dense'] / report['macs']['final']
    values['faster'] = (report['latency_ms']['dense'] /
                        report['latency_ms']['final'])
  if report.get('micro'):
    values['TFLM accuracy'] = report['micro']['accuracy']
    values['TFLM flash bytes'] = report['micro']['flash_bytes']
    values['TFLM arena bytes'] = report['micro']['arena_bytes']
  return values


_PROGRESSIVE_COLUMNS = [
    ('rate', _times), ('test accuracy', _pct), ('TFLite bytes', _count),
    ('TFLite gzip bytes', _count),
    ('epochs', _count), ('training min', _one), ('fewer MACs', _times),
    ('faster', _times), ('TFLM accuracy', _pct), ('TFLM flash bytes', _count),
    ('TFLM arena bytes', _count)]


def _summary_lines(report):
  tflite = report['tflite']
  return [
      f'- result: **{report["compression_rate"]:.1f}x at '
      f'{100 * report["accuracy"]:.2f}%** test accuracy (dense '
      f'{100 * report["dense_accuracy"]:.2f}%); '
      f'{report["nonzero_weights"]:,} of {report["total_weights"]:,} weights',
      f'- {report["epochs"]} training epochs, {report["train_seconds"] / 60:.1f}'
      f' min of training, {report["wall_seconds"] / 60:.1f} min for the whole '
      'command (after installation)',
      f'- TFLite {tflite["variant"]}: {tflite["bytes"]:,} bytes as stored '
      f'against {tflite["dense_bytes"]:,} for the dense float32 model '
      f'({tflite["dense_bytes"] / tflite["bytes"]:.1f}x); gzipped '
      f'{tflite["gzip_bytes"]:,} bytes against {tflite["dense_gzip_bytes"]:,} '
      f'({tflite["dense_gzip_bytes"] / tflite["gzip_bytes"]:.0f}x); accuracy '
      f'{100 * tflite["accuracy"]:.2f}%']


def _channels_line(report):
  shrunk, speed, count = report['shrunk'], report['latency_ms'], report['macs']
  kept = ', '.join(f'{layer} {after}/{before}' for layer, (before, after)
                   in shrunk['channels'].items() if after < before)
  return (
      f'- channels: MACs {count["dense"]:,} -> {count["final"]:,} '
      f'(**{count["dense"] / count["final"]:.1f}x fewer**), parameters '
      f'{report["params"]["dense"]:,} -> {report["params"]["final"]:,}; '
      f'float32 .tflite latency {speed["dense"]:.3f} -> {speed["final"]:.3f} '
      f'ms (**{speed["dense"] / speed["final"]:.1f}x faster**; '
      f'{report["latency_runtime"]}); channels kept: {kept}; validation '
      f'accuracy right after the cut {100 * shrunk["cut_val_accuracy"]:.2f}%')


def _storage_line(report):
  stored = report['storage']
  bits = ', '.join(f'{p} {w["bits"]}' for p, w in stored['weights'].items())
  dead = (f'; dead units zeroed before export: {report["dead_units"]}'
          if report.get('dead_units') else '')
  rounding = report.get('bias_rounding')
  biases = (f'; {rounding["bits"]}-bit biases, '
            f'{100 * rounding["accuracy_before"]:.2f}% with float32 ones'
            if rounding else '')
  return (f'- storage: weight data {stored["weight_data_bytes"]:,.0f} bytes '
          f'({stored["weight_data_reduction"]:,.0f}x smaller than float32), '
          f'{stored["with_index_bytes"]:,.0f} bytes with sparse indices '
          f'({stored["with_index_reduction"]:,.0f}x); bits per layer: '
          + bits + dead + biases)


def _micro_line(micro):
  compressed = ', '.join(f'{name} {bits}-bit' for name, bits
                         in micro['lut_bits'].items() if bits)
  return (f'- TFLite Micro: **{micro["flash_bytes"]:,} bytes of flash, '
          f'{micro["arena_bytes"]:,} bytes of arena, '
          f'{100 * micro["accuracy"]:.2f}% in the TFLM interpreter** (int8 '
          f'file {micro["int8_bytes"]:,} bytes before LUT compression, '
          f'{100 * micro["int8_accuracy_litert"]:.2f}% in LiteRT\'s built-in '
          f'kernels; LUT indices: {compressed or "none"}; compressed outputs '
          'equal the int8 file\'s: '
          f'{"yes" if micro["outputs_equal"] else "NO"})')


def _stage_rows(report):
  rows = [(str(s['stage'] + 1), s) for s in report['stages']]
  if report.get('shrunk'):
    # A cut model's rate counts against the dense model's weights.
    rows.append(('cut, fine-tuned',
                 dict(report['shrunk'], rate=report['compression_rate'])))
  if report.get('quantized'):
    rows.append(('quantized', report['quantized']))
  return [f'| {label} | {s["rate"]:.1f}x | {100 * s["val_accuracy"]:.2f}% | '
          f'{100 * s["test_accuracy"]:.2f}% | {s["epochs"]} | '
          f'{s["seconds"]:.0f} |' for label, s in rows]


def _run_section(title, report, entry, folder):
  lines = [f'### {title}: {report["model"]} on {report["dataset"]}', '',
           f'Command: `python {report["command"]}`', '',
           f'Committed at `{entry["commit"][:7]}` ({entry["date"]}): '
           + _link(folder, 'report.json'), '']
  lines += _summary_lines(report)
  lines += [_channels_line(report)] if report.get('shrunk') else []
  lines += [_storage_line(report)] if report.get('quantized') else []
  lines += [_micro_line(report['micro'])] if report.get('micro') else []
  lines += ['',
            '| stage | rate | val accuracy | test accuracy | epochs | seconds |',
            '|---:|---:|---:|---:|---:|---:|'] + _stage_rows(report)
  kept = ', '.join(f'{l["name"]} {l["nonzero"]:,}/{l["total"]:,}'
                   for l in report['layers'])
  return lines + ['', f'Kept weights: {kept}.', '']


def _progressive_variant(variant, seeds, manifest):
  reports = [(seed, folder, _read_json(RESULTS, folder, 'report.json'))
             for seed, folder in seeds]
  values = [(seed, _progressive_values(r)) for seed, _, r in reports]
  lines = seed_table([(None, values)],
                     _used(_PROGRESSIVE_COLUMNS, [v for _, v in values]))
  for seed, folder, report in reports:
    lines += _run_section(f'{variant} seed{seed}', report, manifest[folder],
                          folder)
  return lines


# tfmot_magnitude: compare_tfmot.py's <model>.json files.


def _model_results(folder):
  names = sorted(n for n in os.listdir(os.path.join(RESULTS, folder))
                 if n.endswith('.json'))
  return [_read_json(RESULTS, folder, n) for n in names]


def _tfmot_case(result, row):
  target = result.get('pattern') or f'{row["rate"]:g}x'
  return f'{result["model"]} {target}'


def _tfmot_values(row):
  admm, other = row['admm'], row['tfmot']
  return {'tf-admm rate': admm['rate'], 'tf-admm accuracy': admm['accuracy'],
          'tfmot accuracy': other['accuracy'],
          'difference (points)': 100 * (admm['accuracy'] - other['accuracy'])}


_TFMOT_COLUMNS = [('tf-admm rate', _times), ('tf-admm accuracy', _pct),
                  ('tfmot accuracy', _pct), ('difference (points)', _points)]


def _tfmot_cases(seeds):
  cases = {}
  for seed, folder in seeds:
    for result in _model_results(folder):
      for row in result['comparison']:
        cases.setdefault(_tfmot_case(result, row), []).append(
            (seed, _tfmot_values(row)))
  return list(cases.items())


def _accuracy_rows(result):
  return [f'| {r["admm"]["rate"]:.1f}x | {r["admm"]["epochs"]} | '
          f'{100 * r["admm"]["accuracy"]:.2f}% | '
          f'{100 * r["tfmot"]["accuracy"]:.2f}% | '
          f'{100 * (r["admm"]["accuracy"] - r["tfmot"]["accuracy"]):+.2f} |'
          for r in result['comparison']]


def _timing_lines(timing):
  if timing is None:
    return []
  rows = [f'| {label} | {timing[key]["plain"]:.2f} | '
          f'{timing[key]["admm"]:.2f} | {timing[key]["tfmot"]:.2f} | '
          f'{timing[key]["admm_vs_plain"]:.3f} | '
          f'{timing[key]["tfmot_vs_plain"]:.3f} |'
          for key, label in (('median_cpu', 'median CPU s'),
                             ('median_wall', 'median wall s'),
                             ('fastest_wall', 'fastest wall s'))]
  return ['', f'Seconds per epoch ({timing["examples_per_epoch"]} examples, '
          f'{len(timing["seconds"]["wall"]["plain"])} interleaved epochs per '
          'arm):', '',
          '| measure | plain | ADMM | tfmot | ADMM / plain | tfmot / plain |',
          '|---|---:|---:|---:|---:|---:|'] + rows


def _deployment_lines(deployment):
  rows = [f'| {name} | {d["bytes"]:,} | {d["gzip_bytes"]:,} | '
          f'{100 * d["accuracy"]:.2f}% | {d["latency_ms"]:.3f} | '
          f'{d["runtime"]} |' for name, d in deployment['formats'].items()]
  return ['', f'Deployment of the tf-admm model at '
          f'{deployment["model_rate"]:.1f}x (LiteRT, 1 thread, median '
          'single-example latency):', '',
          '| format | bytes | gzip bytes | accuracy | latency (ms) | runtime |',
          '|---|---:|---:|---:|---:|---|'] + rows


def _model_lines(result):
  pattern = (f' at the {result["pattern"]} pattern'
             if result.get('pattern') else '')
  return [f'#### {result["model"]} on {result["dataset"]}{pattern}', '',
          f'Measured {result["measured"]}: `{result["command"]}`. Dense test '
          f'accuracy {100 * result["dense_accuracy"]:.2f}% after '
          f'{result["pretrain_epochs"]} epochs; {result["ramp_epochs"]} ramp '
          f'+ {result["retrain_epochs"]} retraining epochs per rate.', '',
          '| rate | epochs | tf-admm accuracy | tfmot accuracy | difference |',
          '|---:|---:|---:|---:|---:|'] + _accuracy_rows(result) + (
              _timing_lines(result['epoch_seconds'])
              + _deployment_lines(result['deployment']) + [''])


def _tfmot_variant(variant, seeds, manifest):
  lines = seed_table(_tfmot_cases(seeds), _TFMOT_COLUMNS)
  for seed, folder in seeds:
    written = [_link(folder, name) for name in ('RESULTS.md', 'NOTES.md')
               if os.path.exists(os.path.join(RESULTS, folder, name))]
    lines += [f'### {variant} seed{seed}', '',
              _provenance(manifest[folder]) + ' As written at the time: '
              + ', '.join(written) + '.', '']
    for result in _model_results(folder):
      lines += _model_lines(result)
  return lines


# collaborative: compare_collaborative.py's results.json files.


def _collaborative_values(result):
  admm, other = result['tfadmm'], result['tfmot']
  return {'tf-admm bytes': admm['bytes'],
          'tf-admm gzip bytes': admm['gzip_bytes'],
          'tf-admm accuracy': admm['tflite_accuracy'],
          'tfmot bytes': other['bytes'],
          'tfmot gzip bytes': other['gzip_bytes'],
          'tfmot accuracy': other['tflite_accuracy'],
          'tfmot / tf-admm (rounded down)':
              result['comparison']['gzip_ratio_tfmot_over_tfadmm'],
          'difference (points)':
              result['comparison']['accuracy_difference_points'],
          'tfmot phases s': result['tfmot_train_seconds'],
          **_collaborative_micro_values(result)}


def _collaborative_micro_values(result):
  if 'micro' not in result['tfadmm']:
    return {}
  admm, other = result['tfadmm']['micro'], result['tfmot']['micro']
  return {'tf-admm TFLM flash bytes': admm['flash_bytes'],
          'tf-admm TFLM accuracy': admm['accuracy'],
          'tfmot TFLM flash bytes': other['flash_bytes'],
          'tfmot TFLM accuracy': other['accuracy'],
          'TFLM flash tfmot / tf-admm': result['comparison']['micro'][
              'flash_bytes_ratio_tfmot_over_tfadmm']}


_COLLABORATIVE_COLUMNS = [
    ('tf-admm bytes', _count), ('tf-admm gzip bytes', _count),
    ('tf-admm accuracy', _pct), ('tfmot bytes', _count),
    ('tfmot gzip bytes', _count), ('tfmot accuracy', _pct),
    ('tfmot / tf-admm (rounded down)', _floor_times),
    ('difference (points)', _points), ('tfmot phases s', _count),
    ('tf-admm TFLM flash bytes', _count), ('tf-admm TFLM accuracy', _pct),
    ('tfmot TFLM flash bytes', _count), ('tfmot TFLM accuracy', _pct),
    ('TFLM flash tfmot / tf-admm', _floor_times)]


def _side_by_side(result):
  admm, other = result['tfadmm'], result['tfmot']
  rows = [('.tflite bytes', _count, 'bytes'),
          ('gzip -9 bytes', _count, 'gzip_bytes'),
          ('LiteRT test accuracy', _pct, 'tflite_accuracy'),
          ('Keras test accuracy', _pct, 'keras_accuracy'),
          ('compression rate (kernels)', _times, 'compression_rate')]
  lines = ['| | tf-admm | tfmot |', '|---|---:|---:|']
  lines += [f'| {label} | {fmt(admm[key])} | {fmt(other[key])} |'
            for label, fmt, key in rows]
  return lines + [f'| post-pretraining epochs | {admm["epochs"]["total"]} | '
                  f'{other["epochs"]["total"]} |']


def _paired_line(comparison):
  paired = comparison.get('paired')
  if not paired:
    return []
  return ['', f'Image by image: tf-admm alone right on '
          f'{paired["only_tfadmm_right"]} of {paired["examples"]:,} test '
          f'images, tfmot alone on {paired["only_tfmot_right"]}; standard '
          f'error of the difference {paired["standard_error_points"]:.2f} '
          'points.']


def _phase_lines(phases):
  return ['', '| tfmot phase | epochs | Keras test accuracy | val accuracy | '
          'seconds |', '|---|---:|---:|---:|---:|'] + [
              f'| {phase} | {m["epochs"]} | {100 * m["test_accuracy"]:.2f}% | '
              f'{100 * m["val_accuracy"]:.2f}% | {m["seconds"]:.0f} |'
              for phase, m in phases.items()]


def _collaborative_result(title, folder, entry):
  result = _read_json(RESULTS, folder, 'results.json')
  written = [_link(folder, name) for name in
             ('RESULTS.md', 'paper_quantized_report.json')
             if os.path.exists(os.path.join(RESULTS, folder, name))]
  comparison = result['comparison']
  return [f'### {title}', '', f'**{result["verdict"]}**', '',
          _provenance(entry) + f' tf-admm run: `{entry["admm_run_command"]}`.'
          f' Measured {result["measured"]}; as written at the time: '
          + ', '.join(written) + '.', ''] + _side_by_side(result) + [
              '', 'tfmot gzip / tf-admm gzip = '
              f'{_floor_times(comparison["gzip_ratio_tfmot_over_tfadmm"])} '
              '(rounded down); LiteRT accuracy difference (tf-admm - tfmot) '
              f'{_points(comparison["accuracy_difference_points"])} points; '
              f'the bar ({comparison["size_bar"]}x) met: '
              f'{"yes" if comparison["bar_met"] else "no"}.'] + (
                  _collaborative_micro_lines(result)
                  + _paired_line(comparison)
                  + _phase_lines(result['tfmot_phases']) + [''])


def _collaborative_micro_lines(result):
  if 'micro' not in result['tfadmm']:
    return []
  sides = {'tf-admm': result['tfadmm']['micro'],
           'tfmot': result['tfmot']['micro']}
  return ['', 'TensorFlow Lite for Microcontrollers: ' + '; '.join(
      f'{side} {m["flash_bytes"]:,} bytes of flash, {m["arena_bytes"]:,} '
      f'of arena, {_pct(m["accuracy"])} in TFLM'
      for side, m in sides.items()) + '. Flash tfmot / tf-admm = '
          + _floor_times(result['comparison']['micro'][
              'flash_bytes_ratio_tfmot_over_tfadmm']) + '.']


def _collaborative_variant(variant, seeds, manifest):
  values = [(seed, _collaborative_values(
      _read_json(RESULTS, folder, 'results.json'))) for seed, folder in seeds]
  lines = seed_table([(None, values)],
                     _used(_COLLABORATIVE_COLUMNS, [v for _, v in values]))
  for seed, folder in seeds:
    lines += _collaborative_result(f'{variant} seed{seed}', folder,
                                   manifest[folder])
  return lines


# l1_filters: compare_l1_filters.py's results.json files.


def _l1_values(result):
  accuracy, latency = result['test_accuracy'], result['latency_ms']
  return {'ADMM accuracy': accuracy['admm'],
          'L1 filters accuracy': accuracy['l1_filters'],
          'difference (points)':
              100 * (accuracy['admm'] - accuracy['l1_filters']),
          'fewer MACs': result['macs']['dense'] / result['macs']['admm'],
          'ADMM ms': latency['admm'], 'L1 filters ms': latency['l1_filters']}


_L1_COLUMNS = [('ADMM accuracy', _pct), ('L1 filters accuracy', _pct),
               ('difference (points)', _points), ('fewer MACs', _times),
               ('ADMM ms', _ms), ('L1 filters ms', _ms)]


def _l1_row(title, result):
  trio = ('dense', 'admm', 'l1_filters')
  return [title, str(result['epochs_after_pretraining']),
          ' / '.join(_count(result['macs'][k]) for k in trio),
          ' / '.join(_pct(result['test_accuracy'][k]) for k in trio),
          ' / '.join(_pct(result['val_accuracy'][k]) for k in trio[1:]),
          ' / '.join(_ms(result['latency_ms'][k]) for k in trio),
          _count(result['l1_filters_seconds'])]


def _l1_variant(variant, seeds, manifest):
  results = [(seed, folder, _read_json(RESULTS, folder, 'results.json'))
             for seed, folder in seeds]
  lines = seed_table([(None, [(s, _l1_values(r)) for s, _, r in results])],
                     _L1_COLUMNS)
  header = ['result', 'epochs', 'MACs dense / ADMM / L1',
            'test accuracy dense / ADMM / L1', 'val accuracy ADMM / L1',
            'latency ms dense / ADMM / L1', 'L1 filters s']
  lines += _table(header, [_l1_row(f'seed{s}', r) for s, _, r in results])
  for seed, folder, result in results:
    kept = ', '.join(f'{n} {after}/{before}' for n, (before, after)
                     in result['channels'].items())
    lines += ['', f'seed{seed}: {_provenance(manifest[folder])} tf-admm run: '
              f'`python {result["run_command"]}`. Channels kept: {kept}. '
              + _link(folder, 'results.json')]
  return lines + ['']


# The reports.


_VARIANT_RENDERERS = {'progressive': _progressive_variant,
                      'tfmot_magnitude': _tfmot_variant,
                      'collaborative': _collaborative_variant,
                      'l1_filters': _l1_variant}


def render(study):
  """The report of `study`, as one string."""
  manifest = _manifest()
  lines = [f'# {STUDIES[study]}', '',
           'Written by `python benchmarks/render.py` from '
           f'`benchmarks/results/{study}/`; each result\'s command, commit, '
           'machine and date are in `benchmarks/results/manifest.json`. Per '
           'variant: the key numbers of each seed, with their mean and '
           'spread (min to max) where there are several; then each result.',
           ''] + _about(study)
  for variant, seeds in _variants(study).items():
    lines += [f'## {variant}', ''] + _about(study, variant)
    lines += _VARIANT_RENDERERS[study](variant, seeds, manifest)
  return '\n'.join(lines).rstrip('\n') + '\n'


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out_dir', default=REPORTS,
                      help='Where the <study>.md reports go.')
  out_dir = parser.parse_args(argv).out_dir
  os.makedirs(out_dir, exist_ok=True)
  for study in STUDIES:
    path = os.path.join(out_dir, f'{study}.md')
    with open(path, 'w') as f:
      f.write(render(study))
    print(f'wrote {path}')


if __name__ == '__main__':
  main()
