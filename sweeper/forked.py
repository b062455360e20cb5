"""One function in a forked process beside this one's work, with its result sent back.

The report draws its tables and plots this way while it evaluates the best model, and
plot_study draws params.png (its slowest plot) beside the others.
"""

from __future__ import annotations


class Forked:
    """``target(*args)`` in a forked process; ``result()`` waits and returns its
    value. Where fork is unavailable, one CPU is free, or the child fails, ``result()``
    runs it here, where an error is raised and seen."""

    def __init__(self, target, *args) -> None:
        import multiprocessing as mp

        from .settings import available_cpus

        self._target, self._args = target, args
        self._child = self._conn = None
        if "fork" in mp.get_all_start_methods() and available_cpus() >= 2:
            ctx = mp.get_context("fork")
            self._conn, send = ctx.Pipe(duplex=False)
            # not a daemon, so it may fork in turn (the report's child forks for params.png);
            # Ctrl-C reaches it with its parent's process group
            self._child = ctx.Process(target=_send_result, args=(send, target, *args))
            self._child.start()
            send.close()  # the child holds its own end

    def result(self):
        if self._child is not None:
            try:
                value = self._conn.recv()
            except EOFError:  # the child died before sending
                value = _FAILED
            self._child.join()
            if self._child.exitcode == 0 and value is not _FAILED:
                return value
        return self._target(*self._args)


_FAILED = object()


def _send_result(conn, target, *args) -> None:
    conn.send(target(*args))
    conn.close()
