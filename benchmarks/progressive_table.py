"""Renders benchmarks/PROGRESSIVE.md from the saved report.json files.

  python benchmarks/progressive_table.py

Each file in benchmarks/results/progressive/ is a report.json written by
examples/prune_mnist.py (its command is inside); this only tabulates them.
"""

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, 'results', 'progressive')


def _run_section(name, report):
  lines = [
      f'## {name}: {report["model"]} on {report["dataset"]}', '',
      f'Command: `python {report["command"]}`', '',
      f'- result: **{report["compression_rate"]:.1f}x at '
      f'{100 * report["accuracy"]:.2f}%** test accuracy (dense '
      f'{100 * report["dense_accuracy"]:.2f}%); '
      f'{report["nonzero_weights"]:,} of {report["total_weights"]:,} weights',
      f'- {report["epochs"]} training epochs, {report["train_seconds"] / 60:.1f}'
      f' min of training, {report["wall_seconds"] / 60:.1f} min for the whole '
      'command (after installation)',
      f'- TFLite {report["tflite"]["variant"]}: '
      f'{report["tflite"]["gzip_bytes"]:,} bytes gzipped against '
      f'{report["tflite"]["dense_gzip_bytes"]:,} for the dense float32 model '
      f'({report["tflite"]["dense_gzip_bytes"] / report["tflite"]["gzip_bytes"]:.0f}x'
      f'), accuracy {100 * report["tflite"]["accuracy"]:.2f}%', '',
      '| stage | rate | val accuracy | test accuracy | epochs | seconds |',
      '|---:|---:|---:|---:|---:|---:|']
  quantized = report.get('quantized')
  shrunk = report.get('shrunk')
  rows = [(str(s['stage'] + 1), s) for s in report['stages']]
  rows += [('quantized', quantized)] if quantized else []
  # A cut model's rate counts against the dense model's weights.
  rows += [('cut, fine-tuned', dict(shrunk, rate=report['compression_rate']))
           ] if shrunk else []
  if shrunk:
    speed = report['latency_ms']
    lines.insert(-3, (
        f'- channels: MACs {report["macs"]["dense"]:,} -> '
        f'{report["macs"]["final"]:,} '
        f'(**{report["macs"]["dense"] / report["macs"]["final"]:.1f}x '
        f'fewer**), parameters {report["params"]["dense"]:,} -> '
        f'{report["params"]["final"]:,}; float32 .tflite latency '
        f'{speed["dense"]:.3f} -> {speed["final"]:.3f} ms '
        f'(**{speed["dense"] / speed["final"]:.1f}x faster**; '
        f'{report["latency_runtime"]}); channels kept: ' + ', '.join(
            f'{layer} {after}/{before}'
            for layer, (before, after) in shrunk['channels'].items()
            if after < before)
        + f'; validation accuracy right after the cut '
        f'{100 * shrunk["cut_val_accuracy"]:.2f}%'))
  for label, s in rows:
    lines.append(f'| {label} | {s["rate"]:.1f}x | '
                 f'{100 * s["val_accuracy"]:.2f}% | '
                 f'{100 * s["test_accuracy"]:.2f}% | {s["epochs"]} | '
                 f'{s["seconds"]:.0f} |')
  if quantized:
    stored = report['storage']
    lines.insert(-len(rows) - 3, (
        f'- storage: weight data {stored["weight_data_bytes"]:,.0f} bytes '
        f'({stored["weight_data_reduction"]:,.0f}x smaller than float32), '
        f'{stored["with_index_bytes"]:,.0f} bytes with sparse indices '
        f'({stored["with_index_reduction"]:,.0f}x); bits per layer: '
        + ', '.join(f'{p} {w["bits"]}' for p, w in stored['weights'].items())
        + (f'; dead units zeroed before export: {report["dead_units"]}'
           if report.get('dead_units') else '')
        + (f'; {report["bias_rounding"]["bits"]}-bit biases, '
           f'{100 * report["bias_rounding"]["accuracy_before"]:.2f}% with '
           'float32 ones' if report.get('bias_rounding') else '')))
  lines += ['', 'Kept weights: ' + ', '.join(
      f'{l["name"]} {l["nonzero"]:,}/{l["total"]:,}' for l in report['layers'])
            + '.', '']
  return lines


def main():
  lines = ['# Progressive ADMM runs of the main job', '',
           'Written by `python benchmarks/progressive_table.py` from the '
           'report.json files in `results/progressive/`. Machine: 2 CPU '
           'cores, no GPU. The six demo runs (demo*, Keras 2 and Keras 3, '
           'three seeds each) are from issue #11\'s seventh stop (the '
           'quantization stage one 2.5-epoch round of ADMM with ten Z/U '
           'steps an epoch), each whole and alone at about 10 s a LeNet-5 '
           'epoch. `--seed` fixes the initial weights too '
           'from commit ac83c56 on; the runs made before it drew them '
           'unseeded, so rerunning them gives other draws of the same '
           'spread. (The demo\'s earlier runs, with four 1-epoch rounds '
           'holding 30% more each and one Z/U step a round, which gave way '
           'to the round\'s hard projection: at issue #11\'s fifth stop '
           '99.13, 99.01 and 99.18% on Keras 2, 99.09, 99.08 and 99.08% on '
           'Keras 3; at its '
           'fourth stop on a day of 23-33 s epochs: 99.25, 99.15 and 99.12% '
           'on Keras 2, 99.11, 99.02 and 99.07% on Keras 3. Pruning only, '
           'it gave 50.0x at 99.29% in 12 minutes at commit 69dc070 on a '
           'day of 22-25 s epochs, and 50.0x at 99.14% in 2.6 min at commit '
           '4880192.) The '
           'nm24 run is from commit b17d0a1\'s library code (the commits '
           'after it change benchmarks and docs). The paper and '
           'LeNet-300-100 '
           'runs are from an earlier stop (library code up to commit '
           '62dbe78), before the penalty\'s gradient was written by hand '
           '(the same mathematics); the paper run shared the CPU with short '
           'profiling jobs for about 3 of its 13 minutes. The five '
           'paper_quantized runs (its quantization stage one 8-epoch round '
           'of ADMM with ten Z/U steps an epoch) are seeds 0-2 from issue '
           '#11\'s sixth stop and seeds 3 and 4 from its ninth (commit '
           'e252dbc), each whole and alone at about 10 s a LeNet-5 epoch; '
           'the earlier preset\'s runs are described in NOTES.md. The three '
           'binary runs are from issue #11\'s seventh stop (one 15-epoch '
           'round, then 15 epochs held, with trained scales), each whole and '
           'alone at about 10 s a LeNet-5 epoch; the earlier ones (a '
           '10-epoch round) are described in NOTES.md. '
           'The channel runs (fast, fast_seed*, vgg*, mobilenet*) are from '
           'the commits of issue #14; the float32 .tflite latencies are '
           'single-example medians on this machine, measured at the end of '
           'each run. fast\'s pretraining ran in a first '
           'attempt, stopped to add the silencing of pruned channels and '
           'resumed, so its wall time leaves it out. The three fast_keras3 '
           'runs are from issue #30\'s first stop, each whole and alone: '
           'seeds 0 and 1 at commits c16b253-668960b (the channel graph on '
           'Keras 3), seed 2 at 12afc9d (the run as steps); latency on this '
           'machine varies by day (a Keras 2 dense LeNet-5 file ran in '
           '0.089 ms that day, 0.159-0.168 ms in issue #14\'s runs), so '
           'speedups compare within a run.',
           '']
  for name in sorted(os.listdir(RESULTS)):
    with open(os.path.join(RESULTS, name)) as f:
      lines += _run_section(name[:-len('.json')], json.load(f))
  with open(os.path.join(HERE, 'PROGRESSIVE.md'), 'w') as f:
    f.write('\n'.join(lines))


if __name__ == '__main__':
  main()
