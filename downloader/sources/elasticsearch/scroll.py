"""A scroll read on threads besides the caller's: one sends the requests, :data:`PARSERS`
decode the answers (by Arrow when the client hands back their bytes, see
:data:`~downloader.sources.elasticsearch.client.JSON_BYTES`), two pages at once, and one
converts the decoded pages in order, while the caller works on the previous page. The
scroll is cleared however the read ends."""

from __future__ import annotations

import functools
import json
import queue
import threading
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import quote

import pyarrow as pa
from elasticsearch import Elasticsearch

from downloader.sources.elasticsearch.client import JSON_BYTES, KEEP_ALIVE, call
from downloader.sources.elasticsearch.hits import Page, arrow_sources, peek
from query.fields import RecordType

T = TypeVar("T")


def _request(
    es: Elasticsearch,
    index: str,
    body: dict[str, Any],
    members: list[pa.Field] | None,
    what: str,
    scroll_id: str | None,
) -> Any:
    """The next answer of the scroll ``scroll_id`` (the first when None): as bytes when
    Arrow decodes it (``members`` given), else decoded by the client."""
    if members is None:
        if scroll_id is None:
            return call(what, es.search, index=index, body=body, scroll=KEEP_ALIVE)
        return call(what, es.scroll, scroll_id=scroll_id, scroll=KEEP_ALIVE)
    return request_page(es, index, body, what, scroll_id)


def request_page(
    es: Elasticsearch, index: str, body: dict[str, Any], what: str, scroll_id: str | None
) -> bytes:
    """The next answer of the scroll ``scroll_id`` (the first, of the search ``body``, when
    None) as the bytes that came (see
    :data:`~downloader.sources.elasticsearch.client.JSON_BYTES`)."""
    if scroll_id is None:
        path, params, payload = (
            f"/{quote(index, safe='')}/_search",
            {"scroll": KEEP_ALIVE},
            body,
        )
    else:
        path, params, payload = (
            "/_search/scroll",
            {},
            {"scroll": KEEP_ALIVE, "scroll_id": scroll_id},
        )
    return call(
        what,
        es.perform_request,
        "POST",
        path,
        params=params,
        headers={"accept": JSON_BYTES, "content-type": "application/json"},
        body=payload,
    ).body


#: Threads that decode answers at once (Arrow decodes without the GIL): a page of 10,000
#: records is 22 MB of JSON and 0.2 s of one core, the longest step of a read once the
#: cluster has answered; pages are converted afterwards one at a time, in order.
PARSERS = 2


def _parse(
    rtype: RecordType, members: list[pa.Field] | None, answer: Any
) -> tuple[int, str | None, Page]:
    """(hits, scroll id, page) of one answer: decoded by Arrow when it came as bytes and
    Arrow decodes it, else by ``json``. Called on a parsing thread, pages in any order."""
    decoded, raw = None, answer if isinstance(answer, bytes) else None
    if isinstance(answer, bytes):
        decoded = arrow_sources(answer, members) if members is not None else None
        if decoded is None:
            answer = json.loads(answer)
    scroll_id: str | None
    if decoded is not None:
        scroll_id, sources = decoded
        n, page = len(sources), Page(rtype, arrow=sources, raw=answer)
    else:
        scroll_id = answer.get("_scroll_id")
        hits = answer["hits"]["hits"]
        n, page = len(hits), Page(rtype, sources=[h["_source"] for h in hits], raw=raw)
    return n, scroll_id, page


def _convert(
    parsed: Future[tuple[int, str | None, Page]], convert: Callable[[Page], T]
) -> tuple[int, str | None, T | None]:
    """(hits, scroll id, ``convert`` of the page or None when it holds no hit) of a parsed
    answer. Called on the converting thread, one answer at a time, in order (a merge's id
    window and the spools of a shared read need pages in order)."""
    n, scroll_id, page = parsed.result()
    return (n, scroll_id, convert(page)) if n else (0, scroll_id, None)


def _put(ahead: queue.Queue[Any], stop: threading.Event, item: Any) -> bool:
    """Put ``item`` in ``ahead`` as soon as there is room; False when ``stop`` is set first
    (the reader left)."""
    while not stop.is_set():
        try:
            ahead.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _replay(
    kept: Iterator[bytes], decode: Callable[[bytes], Any], put: Callable[[Any], bool]
) -> None:
    """Hand each kept answer to ``decode`` and put its future in the caller's queue, then
    None (or the exception that stopped it); stop when ``put`` fails (the caller left)."""
    try:
        for answer in kept:
            if not put(decode(answer)):
                return
        put(None)
    except BaseException as exc:
        put(exc)
    finally:
        if isinstance(kept, Generator):
            kept.close()  # the kept pages' file, at once


def scroll_pages(
    es: Elasticsearch,
    rtype: RecordType,
    index: str,
    body: dict[str, Any],
    members: list[pa.Field] | None,
    convert: Callable[[Page], T],
    *,
    what: str,
    clear_scroll: Callable[[str], None],
    answers: Iterator[bytes] | None = None,
) -> Generator[T, None, None]:
    """``convert`` of each page of the ``rtype`` documents of ``index`` that the search
    ``body`` finds, in its order, through a scroll.

    Each answer is asked for as bytes and decoded by Arrow into the ``_source`` ``members``
    (see :func:`~downloader.sources.elasticsearch.hits.arrow_members`), or, with ``members``
    None or for a page Arrow does not decode, decoded by ``json``. A client error is raised
    as ours for ``what``; ``clear_scroll`` is called with the scroll id however this ends.

    With ``answers`` (the pages of such a scroll kept earlier, see
    :class:`~downloader.sources.elasticsearch.spool.PageSpool`), nothing is asked of the
    cluster: those answers are decoded and converted the same way, in order."""
    state: dict[str, str | None] = {"scroll": None}

    # Threads besides the caller's: one sends the requests, PARSERS decode the answers and
    # one converts them (in order). The next request goes out as soon as an answer shows its
    # scroll id and at least one hit (see peek), so the cluster answers while the last
    # page is decoded; otherwise after that page is decoded. At most one decoded page
    # waits for the caller.
    ahead: queue.Queue[Future[tuple[int, str | None, T | None]] | BaseException | None]
    ahead = queue.Queue(maxsize=1)
    stop = threading.Event()
    parser = ThreadPoolExecutor(max_workers=PARSERS, thread_name_prefix="es-parse")
    decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="es-decode")

    def decode(answer: Any) -> Future[tuple[int, str | None, T | None]]:
        parsed = parser.submit(_parse, rtype, members, answer)
        return decoder.submit(_convert, parsed, convert)

    put = functools.partial(_put, ahead, stop)

    def produce() -> None:
        try:
            while not stop.is_set():
                answer = _request(es, index, body, members, what, state["scroll"])
                scroll_id, more = peek(answer)
                state["scroll"] = scroll_id or state["scroll"]
                decoding = decode(answer)
                if not put(decoding):
                    return
                if scroll_id is None or not more:
                    n, scroll_id, _ = decoding.result()
                    state["scroll"] = scroll_id or state["scroll"]
                    if not n:  # a scroll ends with an empty page
                        break
            put(None)
        except BaseException as exc:
            put(exc)

    work = produce if answers is None else functools.partial(_replay, answers, decode, put)
    producer = threading.Thread(target=work, name="es-fetch", daemon=True)
    producer.start()
    try:
        while True:
            item = ahead.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            _, _, converted = item.result()
            if converted is not None:
                yield converted
    finally:
        stop.set()
        producer.join()
        decoder.shutdown(wait=True, cancel_futures=True)
        parser.shutdown(wait=True, cancel_futures=True)
        if state["scroll"]:
            clear_scroll(state["scroll"])
