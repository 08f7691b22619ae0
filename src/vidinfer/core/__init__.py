"""The pure core: decoding, sampling, results and the pipeline; no HTTP, databases or queues."""
