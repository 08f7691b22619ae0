"""The HTTP API: a thin FastAPI shell over the job store, the blob store and the registry."""
