"""A base config for several changed group choices, from composes that change one choice each.

orchestrator/fast_compose.py composes once per distinct choice of config groups; a preset that
crosses 4 frameworks with 15 models would compose 60 times (~0.1 s each). A choice such as
``model=resnet50`` that names a plain option file — ``conf/<group>/<option>.yaml`` with no
defaults list and no ``@package`` header — merges into the ``<group>`` section and nowhere
else, so two such choices of different groups do not touch each other's keys: the base of
``framework=X model=Y`` is the reference base (the first choice of groups seen with the same
groups in the same order) with its ``framework`` section from the compose that changed only the
framework, and its ``model`` section from the one that changed only the model. 60 composes
become 1 + 3 + 14.

Exact by construction, and checked: each single-change compose must differ from the reference
only in its group's section, else (and for ``+``/``~`` overrides, packages, presets, option files
with defaults, interpolating bases) :func:`combine` returns None and the caller composes exactly.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

# (typed config, resolved container), or None where the base must not be shared (fast_compose.py).
Base = tuple[Any, dict[str, Any]] | None
_CHOICE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=([A-Za-z0-9_.-]+)")
_PACKAGE_HEADER = re.compile(r"^\s*#\s*@package", re.MULTILINE)


@cache
def plain_option(text: str) -> str | None:
    """The group ``text`` (``group=option``) chooses, when its option file merges into that group's
    section only: a YAML file of ``conf/<group>/`` without a defaults list or a package header."""
    import yaml

    match = _CHOICE.fullmatch(text)
    if match is None:
        return None
    group, option = match.groups()
    path = resources.files("conf") / group / f"{option}.yaml"
    if not path.is_file():
        return None
    source = path.read_text()
    if _PACKAGE_HEADER.search(source):
        return None
    try:
        content = yaml.safe_load(source)
    except yaml.YAMLError:
        return None  # Hydra's compose says what is wrong with it
    return group if isinstance(content, dict) and "defaults" not in content else None


class GroupCombiner:
    """Combines bases for :class:`orchestrator.fast_compose.FastComposer` (``exact``: its cached compose)."""

    def __init__(self, exact: Callable[[tuple[str, ...]], Base]) -> None:
        self._exact = exact
        self._references: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.combined = 0

    def combine(self, groups: tuple[str, ...]) -> Base:
        """The base of ``groups`` from single-change composes, or None: compose it exactly."""
        shape = tuple(text.partition("=")[0] for text in groups)
        reference = self._references.setdefault(shape, groups)
        changed = [i for i, (ours, theirs) in enumerate(zip(reference, groups, strict=True)) if ours != theirs]
        if len(changed) < 2:
            return None  # the reference itself, or one change: composing it costs the same
        sections = [plain_option(groups[i]) for i in changed]
        if None in sections or any(plain_option(reference[i]) is None for i in changed):
            return None
        if len(set(sections)) != len(sections):
            return None
        base = self._exact(reference)
        if base is None:
            return None
        typed, container = base
        combined = dict(container)
        for i, section in zip(changed, sections, strict=True):
            single = self._exact((*reference[:i], groups[i], *reference[i + 1 :]))
            if single is None or not _differs_only_in(single[1], container, str(section)):
                return None
            combined[str(section)] = single[1][str(section)]
        self.combined += 1
        return typed, combined


def _differs_only_in(one: dict[str, Any], other: dict[str, Any], section: str) -> bool:
    if one.keys() != other.keys():
        return False
    return all(one[key] == other[key] for key in one if key != section)
