"""Fault points for the fault-injection suite (tests/integration/test_faults.py).

Python imports ``sitecustomize`` at start-up from the first directory of ``sys.path`` that has
one, so a ``downloader serve`` started with this directory first on ``PYTHONPATH`` loads it
in serve and in each of its spawned worker processes. Nothing in the service knows about it:
it wraps a few of the service's own functions, in the worker processes only, so that a build
is killed with SIGKILL at one named point (or, with the scope ``refuse``, meets an error
there: ``s3.upload:refuse`` makes S3 refuse an upload once):

==================  ==========================================================
``claim.before``    the worker has the job id, before it claims the job
``claim.after``     the job is claimed (STARTED, attempt counted), nothing read
``stream``          mid-stream: ``DOWNLOADER_FAULT_ROWS`` rows are in the partial file
``publish.before``  the archive is whole in its temporary file, not yet published
``publish.after``   the archive is published, the job not yet saved as SUCCESS
``saved``           the job is saved as SUCCESS, its "ready" email not yet sent
``email.after``     the email is sent, the worker has not yet said it is done
==================  ==========================================================

``DOWNLOADER_FAULT=<point>:<scope>`` arms one point; the scope is ``service`` (SIGKILL to the
whole process group: serve and every worker, as a power cut or the OOM killer taking the
lot) or ``worker`` (the one worker process). With ``DOWNLOADER_FAULT_ONCE=<path>`` the fault
fires once (the file is created first; an existing file disarms it), otherwise every time.

At scale the same points fire in a Celery worker (tests/integration/test_faults_at_scale.py),
which is started in its own session with the variables set for it alone
(``DOWNLOADER_FAULT_IN=celery`` lets them fire in any of its processes): ``service`` then
kills the whole worker (its main process and pool), ``worker`` only the process building the
job (a prefork pool process, as the OOM killer would pick).
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import signal
from collections.abc import Callable
from typing import Any

_SPEC = os.environ.get("DOWNLOADER_FAULT", "")


def _is_worker() -> bool:
    if os.environ.get("DOWNLOADER_FAULT_IN") == "celery":
        return True
    return multiprocessing.current_process().name == "build-worker"


def _fire(point: str, *, refusal: Callable[[], BaseException] | None = None) -> None:
    armed, _, scope = _SPEC.partition(":")
    if armed != point or not _is_worker():
        return
    if (scope == "refuse") != (refusal is not None):
        return
    once = os.environ.get("DOWNLOADER_FAULT_ONCE")
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return  # fired already, in an earlier process
    if refusal is not None:
        raise refusal()
    if scope == "service":
        os.killpg(os.getpgid(0), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _around(
    owner: Any,
    name: str,
    *,
    before: str | None = None,
    after: str | None = None,
    after_only_if_result: bool = False,
) -> None:
    original: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if before:
            _fire(before)
        result = original(*args, **kwargs)
        if after and (result is not None or not after_only_if_result):
            _fire(after)
        return result

    setattr(owner, name, wrapper)


def _install() -> None:
    from downloader.build import progress, run
    from downloader.jobs import redis, sqlite
    from downloader.storage import local, s3

    for store in (sqlite.SQLiteJobStore, redis.RedisJobStore):
        _around(
            store, "claim", before="claim.before", after="claim.after", after_only_if_result=True
        )
    for storage in (local.LocalStorage, s3.S3Storage):
        _around(storage, "publish", before="publish.before")
    # build_archive calls _succeeded right after the publish (and the cancel check that
    # follows it), before the job is saved: "published, not yet recorded".
    _around(run, "_succeeded", before="publish.after")
    _around(run, "notify_ready", before="saved", after="email.after")

    rows = int(os.environ.get("DOWNLOADER_FAULT_ROWS", "1000"))
    original_progress = progress.ProgressReporter.progress

    def progress_then(self: progress.ProgressReporter, written: int) -> None:
        original_progress(self, written)
        if written >= rows:
            _fire("stream")

    progress.ProgressReporter.progress = progress_then  # type: ignore[method-assign]

    # S3 refusing an upload (a part of a multipart upload, or the single PUT of a small
    # archive) with the 500 it sends when it has an internal error: the error goes through
    # the storage module's own translation at its edge, as a real refusal would.
    original_call = s3._call

    def refusing_call(what: str, func: Callable[..., Any], /, **kwargs: Any) -> Any:
        if "Body" in kwargs:

            def refusal() -> BaseException:
                from botocore.exceptions import ClientError

                error = {"Code": "InternalError", "Message": "We encountered an internal error."}
                return s3._translate(
                    ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": 500}},
                                "UploadPart"),
                    what,
                )  # fmt: skip

            _fire("s3.upload", refusal=refusal)
        return original_call(what, func, **kwargs)

    s3._call = refusing_call


if _SPEC:
    with contextlib.suppress(ImportError):
        _install()
