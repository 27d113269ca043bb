"""Writing files so that a killed process leaves the old file or the new
one, never part of one, and reading them back with errors that name them.

Every write goes to a temporary name unique to the writer (two processes
never share one, and it keeps the target's extension, which Keras and
matplotlib read), is flushed to disk, then renamed over the target.
"""

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from typing import Callable

import numpy as np


def _umask() -> int:
  umask = os.umask(0)
  os.umask(umask)
  return umask


def _temporary_name(path: str, folder: bool = False) -> str:
  """A new file (or folder) beside `path`, with the permissions a plain
  open() would give it (mkstemp's are private)."""
  parent, name = os.path.split(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  if folder:
    temporary = tempfile.mkdtemp(prefix=f'{name}.', suffix='.tmp',
                                 dir=parent)
    os.chmod(temporary, 0o777 & ~_umask())
    return temporary
  stem, extension = os.path.splitext(name)
  handle, temporary = tempfile.mkstemp(prefix=f'{stem}.',
                                       suffix=f'.tmp{extension}', dir=parent)
  os.close(handle)
  os.chmod(temporary, 0o666 & ~_umask())
  return temporary


def _sync(path: str) -> None:
  with open(path, 'rb') as f:
    os.fsync(f.fileno())


def write_atomically(path: str, write: Callable[[str], None]) -> None:
  """`write(temporary path)`, then the file renamed to `path`."""
  temporary = _temporary_name(path)
  try:
    write(temporary)
    _sync(temporary)
    os.replace(temporary, path)
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(temporary)


def write_folder_atomically(path: str, write: Callable[[str], None]) -> None:
  """`write(temporary folder)`, then the folder renamed to `path` (which
  must not exist yet)."""
  temporary = _temporary_name(path, folder=True)
  try:
    write(temporary)
    for name in os.listdir(temporary):
      if os.path.isfile(os.path.join(temporary, name)):
        _sync(os.path.join(temporary, name))
    os.replace(temporary, path)
  finally:
    shutil.rmtree(temporary, ignore_errors=True)


def write_json(path: str, payload) -> None:
  def write(temporary):
    with open(temporary, 'w') as f:
      json.dump(payload, f, indent=2)
  write_atomically(path, write)


def write_bytes(path: str, content: bytes) -> None:
  def write(temporary):
    with open(temporary, 'wb') as f:
      f.write(content)
  write_atomically(path, write)


def copy_folder(source: str, destination: str) -> None:
  def write(temporary):
    shutil.rmtree(temporary)
    shutil.copytree(source, temporary)
  write_folder_atomically(destination, write)


def sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def checksums(folder: str, leave_out: str = '', skip_prefix: str = '') -> dict:
  """{file path relative to `folder`: sha256} of the files under `folder`
  (its subfolders' too, but those named `skip_prefix`...) but
  `leave_out`."""
  found = {}
  for parent, folders, names in os.walk(folder):
    if skip_prefix:
      folders[:] = [f for f in folders if not f.startswith(skip_prefix)]
    for name in names:
      path = os.path.join(parent, name)
      relative = os.path.relpath(path, folder)
      if relative != leave_out:
        found[relative] = sha256(path)
  return dict(sorted(found.items()))


def first_difference(recorded: dict, found: dict):
  """(file name, how it differs) of the first file whose checksum in
  `found` ({name: sha256}) is not the one `recorded`, or None."""
  for name in sorted(set(recorded) | set(found)):
    if name not in found:
      return name, 'is missing'
    if name not in recorded:
      return name, 'was not written by the run'
    if found[name] != recorded[name]:
      return name, 'differs from the file the run wrote (its checksum changed)'
  return None


def load_npz(path: str) -> dict:
  with np.load(path) as arrays:
    return {name: arrays[name] for name in arrays.files}


# How to recover from a damaged file of a run.
RECOVERY = ('Restore it from a copy, or delete it (and, inside dense/ or '
            'candidates/, its whole folder) to redo that part.')


def describe_error(error: Exception) -> str:
  """'KindOfError: its first line', for a message naming a file."""
  return (f'{type(error).__name__}: '
          f'{(str(error).strip().splitlines() or [""])[0]}')


def read(path: str, read_file: Callable[[str], object]):
  """`read_file(path)`, a file written earlier; ValueError naming it if it
  cannot be read (truncated or damaged), before anything is overwritten."""
  try:
    return read_file(path)
  except Exception as error:  # json, h5py, zip and Keras raise many kinds
    raise ValueError(
        f'{path} cannot be read ({describe_error(error)}): it was damaged or '
        f'cut short. {RECOVERY}') from error


def load_json(path: str):
  with open(path) as f:
    return json.load(f)


def read_json(path: str):
  return read(path, load_json)
