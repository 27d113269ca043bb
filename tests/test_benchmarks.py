"""benchmarks/: the committed reports are what render.py makes of the
results, and every result folder has its manifest entry. No training."""

import importlib.util
import json
import os
import re

import pytest

_BENCHMARKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..',
                           'benchmarks')
_RESULTS = os.path.join(_BENCHMARKS, 'results')
_REPO = os.path.dirname(os.path.abspath(_BENCHMARKS))
_spec = importlib.util.spec_from_file_location(
    'render', os.path.join(_BENCHMARKS, 'render.py'))
render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render)


def _result_folders():
  """Every results/<study>/<variant>/seed<N> folder, relative to the repo."""
  found = []
  for study in render.STUDIES:
    for variant in sorted(os.listdir(os.path.join(_RESULTS, study))):
      folder = os.path.join(_RESULTS, study, variant)
      if os.path.isdir(folder):
        found += [os.path.relpath(os.path.join(folder, name), _REPO)
                  for name in sorted(os.listdir(folder))
                  if name != 'ABOUT.md']
  return found


def _manifest():
  with open(os.path.join(_RESULTS, 'manifest.json')) as f:
    return json.load(f)['results']


def _read(path):
  with open(path) as f:
    return f.read()


def test_results_are_study_variant_seed_folders():
  assert sorted(os.listdir(_RESULTS)) == sorted(
      list(render.STUDIES) + ['manifest.json'])
  folders = _result_folders()
  assert len(folders) == 53
  for folder in folders:
    # Beside the seeds, a variant has at most its hand-written ABOUT.md.
    assert re.fullmatch(r'seed\d+', os.path.basename(folder)), folder
    assert os.listdir(os.path.join(_REPO, folder)), folder


def test_rendering_is_deterministic_and_equals_the_committed_reports(
    tmp_path):
  render.main(['--out_dir', str(tmp_path / 'a')])
  render.main(['--out_dir', str(tmp_path / 'b')])
  committed = os.path.join(_BENCHMARKS, 'reports')
  assert sorted(os.listdir(committed)) == sorted(
      f'{study}.md' for study in render.STUDIES)
  for study in render.STUDIES:
    name = f'{study}.md'
    first = _read(tmp_path / 'a' / name)
    assert first == _read(tmp_path / 'b' / name)
    assert first == _read(os.path.join(committed, name)), (
        f'benchmarks/reports/{name} is stale: run python benchmarks/render.py')


def test_every_result_folder_has_exactly_one_complete_manifest_entry():
  entries = _manifest()
  paths = [entry['path'] for entry in entries]
  assert sorted(paths) == sorted(_result_folders())
  assert len(set(paths)) == len(paths)
  for entry in entries:
    assert os.path.isdir(os.path.join(_REPO, entry['path'])), entry['path']
    assert entry['command'].strip(), entry['path']
    assert re.fullmatch(r'[0-9a-f]{40}', entry['commit']), entry['path']
    assert entry['machine'], entry['path']
    assert re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d',
                        entry['date']), entry['path']


@pytest.mark.parametrize('number', [
    # A sample of the numbers the reports held before the tree, one per
    # study at least: progressive, tfmot_magnitude, collaborative, l1_filters.
    ('progressive', '**169.1x at 99.19%**'),
    ('progressive', '(**5.0x fewer**)'),
    ('tfmot_magnitude', '| 166.9x | 12 | 98.72% | 98.91% | -0.19 |'),
    ('tfmot_magnitude',
     '| median CPU s | 5.40 | 5.62 | 5.59 | 1.039 | 1.035 |'),
    ('collaborative', '| gzip -9 bytes | 5,866 | 9,077 |'),
    ('collaborative', 'tfmot gzip / tf-admm gzip = 1.49x'),
    ('l1_filters', '99.44% / 99.37% / 99.45%'),
])
def test_reports_keep_the_numbers_reported_before(number):
  study, text = number
  assert text in _read(os.path.join(_BENCHMARKS, 'reports', f'{study}.md'))
