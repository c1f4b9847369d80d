"""Scheduler backends, one module each, registered by name (``cluster.backend``)."""

from orchestrator.backends.base import BACKENDS, Backend, get_backend, register

__all__ = ["BACKENDS", "Backend", "get_backend", "register"]
