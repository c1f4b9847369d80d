"""Frameworks as strategies: one module per framework, named in jobs/frameworks.py."""

from jobs.strategies.base import Strategy, get_strategy

__all__ = ["Strategy", "get_strategy"]
