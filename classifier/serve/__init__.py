"""Serving: the Classifier protocol, the in-process engine, the HTTP service and its client, batching, metrics."""
