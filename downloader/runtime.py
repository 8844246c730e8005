"""Set-up of the service's long-lived processes (``serve``, its build workers, a Celery
worker) before they import the build's libraries.

:func:`keep_pandas_out`: pyarrow imports pandas, when it is installed, the first time it
checks whether a value is a pandas object, which any ``pa.scalar`` or ``pa.array`` of
Python values does, and again at other checks while it has not found it. Nothing in the
service converts to or from pandas (DuckDB hands over Arrow, archives are written from
Arrow), yet pandas is often installed beside it (the tests' extra, and many Python
environments have it), and then every worker carried it: 35 MB of resident memory and some
340 modules (0.2 s at start) per process, a tenth of a 1M-record build's memory budget.
These processes refuse the import instead, as if pandas were not installed; the libraries
that can use it (pyarrow, DuckDB's and the Elasticsearch client's optional conversions) do
without it, as they do wherever it is missing.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType


class _NoPandas(MetaPathFinder):
    """An import finder that refuses pandas and its submodules."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname == "pandas" or fullname.startswith("pandas."):
            raise ModuleNotFoundError(
                f"No module named {fullname!r} (not used by this process, see downloader.runtime)",
                name=fullname,
            )
        return None


def keep_pandas_out() -> bool:
    """Refuse ``import pandas`` in this process from now on; whether it took effect (not
    when pandas is imported already).

    Only for processes that run nothing but the service (``serve``, build workers, Celery
    workers): code that needs pandas fails there as if it were not installed."""
    if "pandas" in sys.modules:
        return False
    if not any(isinstance(finder, _NoPandas) for finder in sys.meta_path):
        sys.meta_path.insert(0, _NoPandas())
    return True
