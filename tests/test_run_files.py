"""Atomic writes: the old file or the new one, never part of one."""

import json
import os
import threading

import pytest

from tf_admm import run_files


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
  path = tmp_path / 'report.json'
  run_files.write_json(str(path), {'old': 1})

  def fail(temporary):
    with open(temporary, 'w') as f:
      f.write('{"half": ')
    raise OSError('disk full')

  with pytest.raises(OSError, match='disk full'):
    run_files.write_atomically(str(path), fail)
  assert json.loads(path.read_text()) == {'old': 1}
  assert os.listdir(tmp_path) == ['report.json']


def test_writers_at_once_never_share_a_temporary_name(tmp_path):
  path = str(tmp_path / 'pool.json')
  errors = []

  def write(value):
    try:
      for _ in range(20):
        run_files.write_json(path, {'writer': value, 'data': [value] * 500})
    except OSError as error:  # a shared temporary name fails here
      errors.append(error)

  threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert not errors
  found = run_files.read_json(path)
  assert found['data'] == [found['writer']] * 500  # one writer's, whole
  assert os.listdir(tmp_path) == ['pool.json']


def test_files_get_the_permissions_open_would_give(tmp_path):
  path = tmp_path / 'model.tflite'
  run_files.write_bytes(str(path), b'abc')
  (tmp_path / 'plain').write_bytes(b'abc')
  assert path.stat().st_mode == (tmp_path / 'plain').stat().st_mode


def test_a_folder_appears_whole_or_not_at_all(tmp_path):
  folder = tmp_path / 'unit'

  def fail(temporary):
    run_files.write_json(os.path.join(temporary, 'metrics.json'), {})
    raise RuntimeError('killed')

  with pytest.raises(RuntimeError):
    run_files.write_folder_atomically(str(folder), fail)
  assert os.listdir(tmp_path) == []
  run_files.write_folder_atomically(
      str(folder), lambda temporary: run_files.write_json(
          os.path.join(temporary, 'metrics.json'), {'done': True}))
  assert run_files.read_json(str(folder / 'metrics.json')) == {'done': True}


def test_a_damaged_file_is_named(tmp_path):
  path = tmp_path / 'metrics.json'
  path.write_text('{"epochs": ')
  with pytest.raises(ValueError, match=f'{path} cannot be read'):
    run_files.read_json(str(path))
