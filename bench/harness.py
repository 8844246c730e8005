"""Plumbing shared by the benchmarks: work directories, free ports, timing, child processes
whose peak memory is sampled, and bounded waits.

Nothing here knows about archives; each measurement module uses these pieces.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
WORK_ROOT = BENCH_DIR / "work"
RESULTS_DIR = BENCH_DIR / "results"
MB = 1_000_000


def log(message: str) -> None:
    """One progress line on stderr, with the time of day, so a long run shows where it is."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def work_dir(*, keep: bool = False) -> Iterator[Path]:
    """A fresh directory under ``bench/work/``, removed afterwards unless ``keep``."""
    WORK_ROOT.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="run-", dir=WORK_ROOT))
    try:
        yield path
    finally:
        if keep:
            log(f"kept work directory {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, *, timeout: float, proc: subprocess.Popen[Any] | None = None) -> None:
    """Block until something accepts connections on 127.0.0.1:``port``, or raise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on port {port} within {timeout} s")


def dir_size(path: Path) -> int:
    """Total bytes of the files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for child processes: the project importable, no proxies for loopback."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.setdefault("PYTHONUNBUFFERED", "1")
    if extra:
        env.update(extra)
    return env


@dataclass
class ChildRun:
    """What a measured child process did: its JSON answer, wall time and peak memory."""

    result: dict[str, Any]
    wall_seconds: float
    peak_rss_bytes: int
    returncode: int
    stderr_tail: str


def _high_water_mark(pid: int) -> int:
    """The process's own peak resident set (VmHWM, kept by the kernel), in bytes; 0 when it
    cannot be read."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:  # noqa: PTH123  (a proc file)
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class _RSSSampler(threading.Thread):
    """Samples the resident set of a process and its descendants until stopped: the larger
    of their summed RSS and any one's own high-water mark (which covers spikes between two
    samples)."""

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop_event.is_set():
            total = 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for p in procs:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    total += p.memory_info().rss
                    self.peak = max(self.peak, _high_water_mark(p.pid))
            self.peak = max(self.peak, total)
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def run_measured_child(
    args: Sequence[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    sample_interval: float = 0.02,
) -> ChildRun:
    """Run ``python args...`` as a child, sampling its peak RSS (with its own children).

    The child prints one JSON object as its last stdout line. The peak is the larger of the
    sampled sum over the process tree and the kernel's high-water mark of each process in it
    (VmHWM, which covers spikes between two samples). Not ``ru_maxrss`` of this process's
    children: that is a maximum over every child ever waited for, so an earlier process's
    peak can pass for this child's.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or bench_env(),
        cwd=cwd or ROOT,
    )
    sampler = _RSSSampler(proc.pid, sample_interval)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        sampler.stop()
        raise TimeoutError(f"child {args[:3]} ran over {timeout} s: {err[-2000:]}") from None
    wall = time.perf_counter() - start
    sampler.stop()
    peak = sampler.peak
    lines = [line for line in out.splitlines() if line.strip()]
    result: dict[str, Any] = {}
    if lines:
        with contextlib.suppress(ValueError):
            result = json.loads(lines[-1])
    if proc.returncode != 0 or not result:
        raise RuntimeError(
            f"child {' '.join(args[:3])} failed ({proc.returncode}): {err[-3000:]}\n{out[-1000:]}"
        )
    return ChildRun(result, wall, peak, proc.returncode, err[-2000:])


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Run ``fn`` once; its wall time in seconds and its result."""
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


@contextlib.contextmanager
def server_process(
    args: Sequence[str],
    *,
    port: int,
    env: dict[str, str] | None = None,
    log_path: Path,
    startup_timeout: float = 60.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server child listening on ``port``; terminate it (and only it) afterwards."""
    with Path(log_path).open("wb") as log_file:
        proc = subprocess.Popen(
            list(args),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env or bench_env(),
            cwd=ROOT,
            start_new_session=True,
        )
        try:
            wait_for_port(port, timeout=startup_timeout, proc=proc)
            yield proc
        finally:
            _stop_tree(proc)


def _stop_tree(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """Terminate a child we started and the worker processes it started, by pid."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    _gone, alive = psutil.wait_procs(children, timeout=grace)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
