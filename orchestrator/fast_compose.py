"""Compose thousands of cells with a handful of Hydra composes.

A full Hydra compose costs tens of milliseconds; a 10,000-cell sweep would spend minutes
there. Cells of a grid differ in a few values, so: compose once per distinct choice of
config groups (``model=…``, ``framework=…``, presets), check and convert each distinct
``key=value`` once against that typed config (so a wrong type is still Hydra's error),
then build each cell as a copy of the resolved base with its values set (a base whose plain
group choices differ from an earlier one in several groups is combined from single-change
composes: orchestrator/group_compose.py). Whenever that shortcut could differ from Hydra
(interpolations other than ``oc.env``, ``+``/``~`` overrides, package overrides) the cell is
composed the slow, exact way. The tests compare both ways on grids with ranges, choices and globs.
"""

from __future__ import annotations

import copy
import re
from functools import cache
from typing import Any

from omegaconf import DictConfig, OmegaConf

from orchestrator import config as compose_config
from orchestrator.group_compose import GroupCombiner

_IMMUTABLE = (str, int, float, bool, type(None))  # shared between cells as they are: nothing can change them
_OTHER_INTERPOLATION = re.compile(r"\$\{(?!oc\.env:)")
# ``key=123`` as a grid axis spells it (seed=range(0,100000)): Hydra's grammar reads such a text as
# the key and the int, nothing else, so it skips the grammar (~1 ms a text). Anything else, even
# ``1_000`` or ``+5``, which Hydra also reads as ints, takes the grammar.
_PLAIN_INT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)=(-?(?:0|[1-9][0-9]*))")


@cache
def config_groups() -> frozenset[str]:
    from importlib import resources

    root = resources.files("conf")
    return frozenset(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))


class FastComposer:
    def __init__(self) -> None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        self._parser = OverridesParser.create()
        self._parsed: dict[str, Any] = {}
        self._bases: dict[tuple[str, ...], tuple[DictConfig, dict[str, Any]] | None] = {}
        self._values: dict[str, tuple[str, Any]] = {}
        self._value_kind: dict[str, bool] = {}
        # Keys whose typed node keeps an int as that int: every further int is checked already.
        self._int_keys: set[str] = set()
        self._trial: DictConfig | None = None
        self.slow_composes = 0
        self.fast_cells = 0
        self._combiner = GroupCombiner(self._exact_base)

    def _parse(self, text: str) -> Any:
        if text not in self._parsed:
            self._parsed[text] = self._parser.parse_override(text)
        return self._parsed[text]

    def _is_value(self, text: str) -> bool:
        """A plain ``key=value`` change of a config value (not a group, not +/~, no package)."""
        if text not in self._value_kind:
            self._value_kind[text] = self._classify(text)
        return self._value_kind[text]

    def _classify(self, text: str) -> bool:
        plain = _PLAIN_INT.fullmatch(text)
        if plain:
            return plain.group(1) not in config_groups()
        override = self._parse(text)
        return (
            not override.is_add()
            and not override.is_delete()
            and not override.is_force_add()
            and override.package is None
            and override.key_or_group not in config_groups()
            and "@" not in override.key_or_group
        )

    def _base(self, groups: tuple[str, ...]) -> tuple[DictConfig, dict[str, Any]] | None:
        if groups not in self._bases:
            combined = self._combiner.combine(groups)  # several plain group choices changed: no compose
            if combined is not None:
                self._bases[groups] = combined
        return self._exact_base(groups)

    def _exact_base(self, groups: tuple[str, ...]) -> tuple[DictConfig, dict[str, Any]] | None:
        if groups not in self._bases:
            typed = compose_config.compose(list(groups))
            unresolved = OmegaConf.to_yaml(typed)
            if _OTHER_INTERPOLATION.search(unresolved):
                self._bases[groups] = None  # a value may feed an interpolation: compose exactly
            else:
                self._bases[groups] = (typed, compose_config.resolved(typed))
        return self._bases[groups]

    def _value(self, typed: DictConfig, text: str) -> tuple[str, Any]:
        """The value ``text`` sets, converted and checked by the typed config, once per text.

        Every option of a group shares its dataclass schema, so a value's type check does
        not depend on which options were chosen.
        """
        if text in self._values:
            return self._values[text]
        plain = _PLAIN_INT.fullmatch(text)
        if plain and plain.group(1) in self._int_keys:
            return plain.group(1), int(plain.group(2))
        path, value = (plain.group(1), int(plain.group(2))) if plain else self._path_and_value(text)
        if self._trial is None:
            # One scratch copy serves every check: each check writes one key, then reads it back.
            self._trial = copy.deepcopy(typed)
        try:
            OmegaConf.update(self._trial, path, value, merge=True)
            node = OmegaConf.select(self._trial, path, throw_on_missing=True)
        except Exception:  # OmegaConf raises many types: let Hydra say what is wrong, in its words
            compose_config.compose([text])
            raise
        if isinstance(node, DictConfig) or OmegaConf.is_list(node):
            node = OmegaConf.to_container(node, resolve=True)
        if plain and type(node) is int and node == value:
            self._int_keys.add(path)  # checked once; the grid's other ints need no scratch write
        else:
            self._values[text] = (path, node)
        return path, node

    def _path_and_value(self, text: str) -> tuple[str, Any]:
        override = self._parse(text)
        return override.key_or_group, override.value()

    def resolved(self, overrides: list[str]) -> dict[str, Any]:
        """The resolved config of one cell, equal to ``resolved(compose(overrides))``."""
        groups = tuple(o for o in overrides if not self._is_value(o))
        values = [o for o in overrides if self._is_value(o)]
        base = self._base(groups)
        if base is None:
            self.slow_composes += 1
            return compose_config.resolved(compose_config.compose(overrides))
        typed, container = base
        config = dict(container)  # copied along each path that changes; the rest is shared
        for text in values:
            path, value = self._value(typed, text)
            _set(config, path, value if isinstance(value, _IMMUTABLE) else copy.deepcopy(value))
        self.fast_cells += 1
        return config


def _set(config: dict[str, Any], path: str, value: Any) -> None:
    """Set ``path`` in ``config``, copying each dict on the way so shared bases stay intact."""
    *parents, leaf = path.split(".")
    node = config
    for part in parents:
        node[part] = dict(node[part])
        node = node[part]
    node[leaf] = value
