"""The download service: HTTP API, jobs, dispatch, record sources, storage, config, CLI."""
