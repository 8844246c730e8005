"""The HTTP API, and the only package that imports Tornado.

:mod:`~downloader.api.app` holds the application (every route in one table) and
``downloader serve``; one module per resource holds its handlers (:mod:`.downloads`,
:mod:`.archives`, :mod:`.exports`, :mod:`.jobs`, :mod:`.health`), and :mod:`.base` the one
error mapping and the parameter parsing they share. Handlers parse, call one function of
:mod:`downloader.service`, and write its answer.
"""
