"""Durable jobs: the queue services add work to, the worker that runs it, and its handlers."""
