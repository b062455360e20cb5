"""Shared test setup. (tests/ is a package: pytest puts the repository root, its parent, on
sys.path, so ``app``, ``core``, ``sweeper`` and ``tests.helpers`` import from this checkout.)

The CUDA simulator must be switched on before numba is first imported, so it is set here,
at the top of the first file pytest loads. It changes nothing for the CPU engines.
"""

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# composed configs are cached on disk (app.compose.cache_dir): one folder per test session,
# shared with the session's subprocesses, never the user's ~/.cache
if "NNSWEEP_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["NNSWEEP_CACHE_DIR"] = tempfile.mkdtemp(prefix="nnsweep-test-cache-")
