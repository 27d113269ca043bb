"""One run at a time in a run folder.

The lock is an advisory `flock` on the file run.lock in the folder, which
also records who holds it (host, process id, start time) for the message a
second run gets. The holder removes the file when it is done. The operating
system drops the lock when its process ends, however it ends, so a lock
file left by a killed run is never stale: the next run takes it and says
what it found.

Linux and macOS; on a network filesystem the lock holds where the
filesystem supports `flock` (NFS maps it to its own locks).
"""

import contextlib
import fcntl
import json
import os
import socket
import time

from absl import logging

LOCK_NAME = 'run.lock'


class RunFolderBusy(ValueError):
  """Another process holds the run folder's lock."""


def _holder(handle) -> dict:
  """Who wrote the lock file last ({} if it cannot be read)."""
  handle.seek(0)
  try:
    holder = json.loads(handle.read() or '{}')
  except ValueError:
    return {}
  return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
  if not holder:
    return 'another process'
  since = time.strftime('%Y-%m-%d %H:%M:%S',
                        time.localtime(holder.get('since', 0)))
  return (f'process {holder.get("pid")} on {holder.get("host")} (since '
          f'{since})')


@contextlib.contextmanager
def locked(folder: str):
  """Holds the lock of `folder` (which must exist) while the block runs;
  raises RunFolderBusy at once if another process holds it."""
  path = os.path.join(folder, LOCK_NAME)
  handle = _take(path, folder)
  try:
    previous = _holder(handle)
    if previous:
      logging.info('%s was last run by %s, which has ended.', folder,
                   _describe(previous))
    handle.seek(0)
    handle.truncate()
    json.dump({'host': socket.gethostname(), 'pid': os.getpid(),
               'since': time.time()}, handle)
    handle.flush()
    yield
  finally:
    # While still locked, so no one holds it meanwhile (the block may have
    # removed the folder with it).
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)
    handle.close()  # which drops the lock


def _take(path: str, folder: str):
  """The open lock file at `path`, locked by this process."""
  while True:
    handle = open(path, 'a+')
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _holder(handle)
      handle.close()
      raise RunFolderBusy(
          f'{folder!r} is in use by {_describe(holder)}, which is running '
          'in it now; wait for it to finish, or choose another '
          '--output_dir.') from None
    # The holder before may have removed the file between our open and our
    # lock: then this lock is on a file no one else will see; open anew.
    try:
      if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
        return handle
    except FileNotFoundError:
      pass
    handle.close()
