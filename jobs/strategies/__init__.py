"""Frameworks as strategies: each module registers one with :func:`register`."""

from jobs.strategies.base import STRATEGIES, Strategy, get_strategy, register

__all__ = ["STRATEGIES", "Strategy", "get_strategy", "register"]
