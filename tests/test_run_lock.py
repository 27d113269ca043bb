"""One run at a time in a run folder (tf_admm.run_lock)."""

import json
import os
import subprocess
import sys

import pytest

from tf_admm import run_lock


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
  with run_lock.locked(str(tmp_path)):
    with pytest.raises(run_lock.RunFolderBusy,
                       match=f'in use by process {os.getpid()} on '):
      with run_lock.locked(str(tmp_path)):
        pass
  assert not (tmp_path / run_lock.LOCK_NAME).exists()  # released on exit
  with run_lock.locked(str(tmp_path)):
    pass


def test_the_lock_is_released_when_the_block_fails(tmp_path):
  with pytest.raises(KeyError):
    with run_lock.locked(str(tmp_path)):
      raise KeyError('boom')
  with run_lock.locked(str(tmp_path)):
    pass


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
  # A process that takes the lock and dies without releasing it.
  holder = subprocess.run(
      [sys.executable, '-c', 'import os, sys\n'
       'from tf_admm import run_lock\n'
       'with run_lock.locked(sys.argv[1]):\n'
       '  os._exit(9)\n', str(tmp_path)],
      capture_output=True, text=True, timeout=120)
  assert holder.returncode == 9, holder.stderr[-2000:]
  left = json.loads((tmp_path / run_lock.LOCK_NAME).read_text())
  assert left['pid'] != os.getpid()
  with run_lock.locked(str(tmp_path)):  # the OS dropped the dead one's lock
    now = json.loads((tmp_path / run_lock.LOCK_NAME).read_text())
    assert now['pid'] == os.getpid()
  assert not (tmp_path / run_lock.LOCK_NAME).exists()
