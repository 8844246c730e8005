"""Archive storage: a local directory served by the API (:mod:`.local`) or S3 with
presigned URLs (:mod:`.s3`), both behind :class:`~downloader.interfaces.Storage`."""
