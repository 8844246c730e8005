"""The API's reference: a bare Tornado server that answers every GET with fixed JSON bytes.

It does no work per request beyond HTTP itself, so the status endpoint's rate divided by
this one's (same machine, same load generator, same response body) says how much of the
budget our handler, service and job store take.

    python -m bench.bare_server PORT BODY_FILE
"""

from __future__ import annotations

import sys
from pathlib import Path

import tornado.ioloop
import tornado.web


class _Fixed(tornado.web.RequestHandler):
    body: bytes = b"{}"

    def get(self, _path: str) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.write(self.body)


def main(argv: list[str]) -> int:
    """Serve ``BODY_FILE``'s bytes on 127.0.0.1:``PORT`` until terminated."""
    port, body_file = int(argv[0]), Path(argv[1])
    _Fixed.body = body_file.read_bytes()
    app = tornado.web.Application([(r"/(.*)", _Fixed)])
    app.listen(port, "127.0.0.1")
    tornado.ioloop.IOLoop.current().start()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
