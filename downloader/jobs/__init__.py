"""Job stores: the SQLite file of the embedded default (:mod:`.sqlite`) and Redis at
scale (:mod:`.redis`), both behind :class:`~downloader.interfaces.JobStore`."""
