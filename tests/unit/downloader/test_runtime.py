"""The service's processes keep pandas out (downloader.runtime): checked in fresh
interpreters, since the test process itself has pandas imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _run(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


def test_a_build_worker_never_imports_pandas() -> None:
    """A worker imports its module (to unpickle its target) before serve_jobs runs: that
    import must leave pyarrow untouched, and nothing a build imports or calls brings
    pandas back (pyarrow asks for it again at some checks, a kept-out import is refused)."""
    out = _run(
        "import sys\n"
        "import downloader.dispatch.worker as worker\n"
        "print('pandas' in sys.modules)\n"
        "from downloader.runtime import keep_pandas_out\n"
        "print(keep_pandas_out())\n"
        "worker._warm_up()\n"
        "import pyarrow as pa, duckdb\n"
        "pa.array([1, 2]); pa.scalar('x'); pa.table({'a': ['b']})\n"
        "duckdb.connect().sql('SELECT 1 AS a').to_arrow_table()\n"
        "print('pandas' in sys.modules)\n"
        "try:\n"
        "    import pandas\n"
        "    print('imported')\n"
        "except ImportError as exc:\n"
        "    print('refused', exc.name)\n"
    )
    assert out.splitlines() == ["False", "True", "False", "refused pandas"]


def test_nothing_is_refused_once_pandas_is_imported() -> None:
    out = _run(
        "import pandas\n"
        "from downloader.runtime import keep_pandas_out\n"
        "print(keep_pandas_out())\n"
        "import pandas.testing\n"
        "print('ok')\n"
    )
    assert out.splitlines() == ["False", "ok"]
