"""Scheduler backends, one module each, named by a row of ``BACKENDS`` (``cluster.backend``)."""

from orchestrator.backends.base import BACKENDS, Backend, get_backend

__all__ = ["BACKENDS", "Backend", "get_backend"]
