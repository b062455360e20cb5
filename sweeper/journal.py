"""The study journal: Optuna's journal format (one JSON operation per line), written cheaply
and safely by every worker process on this machine.

Optuna's own ``JournalFileBackend`` reopens the file, takes a symlink lock and fsyncs for
every operation (~0.6 ms each, ~57 per trial), and a process killed in the middle of an
append leaves a torn last line that the next writer appends onto, breaking the file in its
middle. ``JournalFile`` keeps the format (optuna-dashboard and ``JournalFileBackend`` still
read the file) and changes how it is written:

- one ``write()`` per append on an ``O_APPEND`` descriptor held open, under ``flock``: lines
  from several processes never interleave;
- reading is incremental from the last byte read (one ``fstat`` when nothing is new); a line
  without its newline is an append in progress and is left for the next read;
- a torn tail (no newline at the end while we hold the lock, so no writer is mid-append) is
  copied to ``journal.log.torn-<time>`` and cut off before anything is written after it;
- ``fsync`` only after the operations that finish something (a trial's final state, a new
  study): the page cache survives ``kill -9``, so every operation is safe against a killed
  worker; after a power loss at most the running trials' progress is lost, and those trials
  are re-queued as stale.

Operations lost to a torn tail belong to a trial that was running when its worker died;
the stale-trial recovery re-queues it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from optuna.storages.journal import BaseJournalBackend

from core.config import ConfigError

# optuna.storages.journal._storage.JournalOperation: CREATE_STUDY = 0, SET_TRIAL_STATE_VALUES = 6
# (tests/test_journal.py checks these codes against Optuna's)
DURABLE_OPS = frozenset({0, 6})


class JournalFile(BaseJournalBackend):
    """An Optuna journal backend over one local file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._open()

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self._offset = 0  # bytes consumed by read_logs
        self._count = 0  # log lines consumed
        with self._lock, self._flock():
            self._repair_tail()

    # pickling (spawned workers get the storage by value): reopen the file
    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self._lock = threading.Lock()
        self._open()

    def __del__(self, _close=os.close) -> None:  # os may be gone when the interpreter exits
        fd = getattr(self, "_fd", None)
        if fd is not None:
            _close(fd)

    def _flock(self):
        return _FileLock(self._fd)

    def _repair_tail(self) -> None:
        """Cut a torn last line (call with the file lock held), keeping a copy of the file."""
        size = os.fstat(self._fd).st_size
        if size == 0 or os.pread(self._fd, 1, size - 1) == b"\n":
            return
        data = os.pread(self._fd, size, 0)
        keep = data.rfind(b"\n") + 1
        backup = self.path.with_name(f"{self.path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copy2(self.path, backup)
        os.ftruncate(self._fd, keep)
        logging.getLogger("nnsweep.journal").warning(
            "%s: cut a torn last line (%d bytes) left by a killed process; copy kept in %s",
            self.path, size - keep, backup.name,
        )

    # BaseJournalBackend
    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        with self._lock:
            if log_number_from < self._count:  # a fresh reader: start over
                self._offset, self._count = 0, 0
            size = os.fstat(self._fd).st_size
            if size <= self._offset:
                return iter(())
            data = os.pread(self._fd, size - self._offset, self._offset)
            end = data.rfind(b"\n") + 1  # a line still being appended waits for the next read
            lines = data[:end].splitlines()
            self._offset += end
            first = self._count
            self._count += len(lines)
        logs = []
        for number, line in enumerate(lines, start=first):
            try:
                logs.append(json.loads(line))
            except ValueError:
                raise ConfigError(
                    f"{self.path}: line {number + 1} is not a journal entry (the file was "
                    "damaged, e.g. written past a torn line by an older version); restore it "
                    "from a backup or start another --study"
                ) from None
        return iter(logs[max(0, log_number_from - first):])

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)
        with self._lock, self._flock():
            self._repair_tail()
            os.write(self._fd, text.encode("utf-8"))
            if any(log.get("op_code") in DURABLE_OPS for log in logs):
                os.fsync(self._fd)


class _FileLock:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)


def journal_storage(path: str | Path):
    """An Optuna JournalStorage over ``JournalFile(path)``."""
    from optuna.storages import JournalStorage

    return JournalStorage(JournalFile(path))
