"""Config keys added after the first dumps were written: filled in by readers, left out of cell ids."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jobs.schema.fields import exactly_equal

# Config keys (dotted) added after the first dumps were written, with the value those dumps
# ran with. Readers fill them in, so an old and a new dump of one configuration stay one
# configuration; cell ids leave them out while at that value, so old ids stay valid.
ADDED_CONFIG_DEFAULTS: dict[str, Any] = {
    "cudnn_benchmark": False,
    "cluster.ssh_port": None,
    "cluster.ssh_identity_file": None,
    "cluster.gpu_type": None,
    "cluster.exclusive": False,
    "pipeline.bandwidth": "config",
    # Cells planned before the knob were timed part by part (or, before the breakdown existed,
    # ran the same loop without it): their ids stay where they were.
    "breakdown": True,
    # env=current (conf/structured.py EnvConfig): what every cell before named environments ran in.
    "env": {
        "name": "current",
        "python": None,
        "setup": [],
        "variables": {},
        "container": None,
        "runtime": None,
        "mounts": [],
        "lock": None,
    },
}


def _parent_copied(config: dict[str, Any], dotted: str) -> tuple[dict[str, Any] | None, str]:
    """The dict holding ``dotted``'s leaf, copied along the path inside ``config`` (a copy itself)."""
    *parents, leaf = dotted.split(".")
    node = config
    for name in parents:
        child = node.get(name)
        if not isinstance(child, dict):
            return None, leaf
        node[name] = node = dict(child)
    return node, leaf


def with_added_defaults(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with every added key present (a copy; old configs get the old values)."""
    filled = dict(config)
    for dotted, value in ADDED_CONFIG_DEFAULTS.items():
        node, leaf = _parent_copied(filled, dotted)
        if node is not None:
            node.setdefault(leaf, value)
    return filled


def without_added_defaults(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` as written before the added keys existed, where they hold their old value."""
    trimmed = dict(config)
    for dotted, value in ADDED_CONFIG_DEFAULTS.items():
        node, leaf = _parent_copied(trimmed, dotted)
        if node is not None and leaf in node and exactly_equal(node[leaf], value):
            del node[leaf]
    return trimmed
