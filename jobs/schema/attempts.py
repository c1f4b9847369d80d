"""A whole attempt folder: each rank's dump read and validated, against its cell and the other ranks."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Mapping
from typing import Any

from jobs.schema.config_migration import with_added_defaults
from jobs.schema.fields import _ABSENT, _LISTED, PHASES, SchemaError, exactly_equal, json_text
from jobs.schema.files import dump_filename, read_dump, read_json
from jobs.schema.meaning import validate
from jobs.schema.pipeline_section import _pipeline_rank_reasons
from jobs.schema.shape import dump_replicas, world_size_of

# --------------------------------------------------------------------------- a dump and its cell


def _differences(dump: Any, cell: Any, path: str = "") -> list[str]:
    if isinstance(dump, dict) and isinstance(cell, dict):
        found = []
        for key in sorted(set(dump) | set(cell), key=str):
            found += _differences(dump.get(key, _ABSENT), cell.get(key, _ABSENT), f"{path}.{key}" if path else key)
        return found
    if exactly_equal(dump, cell):
        return []

    def shown(value: Any) -> str:
        return "absent" if value is _ABSENT else json.dumps(value, default=str)

    return [f"{path or 'config'}: {shown(dump)} in the dump, {shown(cell)} in cell.json"]


def check_against_cell(doc: Any, cell_config: Mapping[str, Any], cell_id: str | None = None) -> list[str]:
    """Every way ``doc`` is not a dump of the cell whose ``cell.json`` holds ``cell_config`` (and ``cell_id``).

    Both configs get :func:`with_added_defaults` first: a dump written before a key existed still matches.
    """
    return _cell_reasons(doc, cell_config, with_added_defaults(cell_config), cell_id)


def _cell_reasons(
    doc: Any, cell_config: Mapping[str, Any], filled: dict[str, Any], cell_id: str | None, same: bool = False
) -> list[str]:
    """:func:`check_against_cell` with the cell's config already filled in (once per attempt); ``same``: the
    dump's config is known to be exactly the cell's (their JSON texts compared already)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        return []  # validate() names what is wrong with such a document
    reasons = []
    config = doc["config"]
    if not same and not exactly_equal(config, cell_config):  # equal as written: equal with the added defaults too
        ours = with_added_defaults(config)
        if not exactly_equal(ours, filled):
            differences = _differences(ours, filled)
            more = f"; and {len(differences) - _LISTED} more" if len(differences) > _LISTED else ""
            reasons.append("config differs from cell.json: " + "; ".join(differences[:_LISTED]) + more)
    if cell_id is not None and doc.get("cell_id") != cell_id:
        reasons.append(f"cell_id: {doc.get('cell_id')!r}, but cell.json is cell {cell_id!r}")
    return reasons


def check_ranks(
    docs: Mapping[int, dict[str, Any]], world_size: int, config_texts: Mapping[int, bytes | None] | None = None
) -> list[str]:
    """Every way the valid dumps of one attempt (rank → dump) do not fit together; ``config_texts``: each rank's
    config as :func:`jobs.schema.fields.json_text` spells it, when the caller has it (then no config is encoded
    again to be compared)."""
    if not docs:
        return []
    reasons = []
    for key in ("cell_id", "repeat", "framework", "model", "world_size"):
        values = {str(d[key]) for d in docs.values()}
        if len(values) > 1:
            reasons.append(f"ranks disagree on {key}: {sorted(values)}")
    first = next(iter(docs.values()))
    if not _configs_agree(docs, first, config_texts or {}):
        reasons.append("ranks disagree on config")
    for key in ("device_type", "memory_kind"):
        values = {str(d[key]) for d in docs.values()}
        if len(values) > 1:
            reasons.append(f"ranks disagree on {key}: {sorted(values)}")
    for name in PHASES:
        for key in ("timed_steps", "warmup_steps"):
            values = {d["phases"][name][key] for d in docs.values()}
            if len(values) > 1:
                reasons.append(f"ranks disagree on phases.{name}.{key}: {sorted(values)}")
    reasons += _pipeline_rank_reasons(docs)
    replicas = dump_replicas(first)
    counting = sum(d["counts_samples"] for d in docs.values())
    if len(docs) == world_size and replicas is not None and counting != replicas:
        reasons.append(
            f"{counting} rank(s) count samples, but the config has {replicas} data-parallel replica(s), one each"
        )
    return reasons


def _configs_agree(
    docs: Mapping[int, dict[str, Any]], first: dict[str, Any], texts: Mapping[int, bytes | None]
) -> bool:
    """Whether every rank's config is exactly the first's: one JSON text and ``==`` (a NaN is ``==`` to nothing,
    so a text of ``null`` for it never passes), else compared value by value."""
    known = [texts.get(rank) for rank in docs]
    if known and None not in known and len(set(known)) == 1:
        return all(d["config"] == first["config"] for d in docs.values())
    return all(exactly_equal(d["config"], first["config"]) for d in docs.values())


def read_attempt(
    attempt_dir: str | os.PathLike[str],
    world_size: int,
    cell_config: Mapping[str, Any] | None = None,
    cell_id: str | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """(valid dumps of ranks ``0..world_size-1``, every reason the attempt is not complete and valid).

    Each dump is validated (:func:`validate`), compared with its cell (:func:`check_against_cell`,
    when ``cell_config`` is given) and with the other ranks (:func:`check_ranks`).
    """
    folder = os.fspath(attempt_dir)
    filled = with_added_defaults(cell_config) if cell_config is not None else {}
    cell_text = json_text(cell_config) if cell_config is not None else None
    texts: dict[int, bytes | None] = {}  # each rank's config as JSON text: compared with the cell's and each other
    docs: dict[int, dict[str, Any]] = {}
    reasons: list[str] = []
    for rank in range(world_size):
        name = dump_filename(rank)
        read = read_dump(os.path.join(folder, name))
        doc, error = read.doc, read.error
        if error:
            reasons.append(f"rank {rank}: {'no dump' if error == 'missing' else error}")
            continue
        invalid = validate(doc, numbers_finite=not read.may_hold_odd_numbers, shape_checked=read.shape_checked)
        config = doc.get("config") if isinstance(doc, dict) else None
        texts[rank] = json_text(config) if isinstance(config, dict) else None
        if cell_config is not None:
            same = texts[rank] is not None and texts[rank] == cell_text and config == cell_config
            invalid += _cell_reasons(doc, cell_config, filled, cell_id, same)
        if invalid:
            reasons.append(f"rank {rank}: invalid dump: " + "; ".join(invalid))
        elif doc["rank"] != rank:
            reasons.append(f"rank {rank}: {name} holds rank {doc['rank']} (duplicated rank)")
        elif doc["world_size"] != world_size:
            reasons.append(f"rank {rank}: world_size {doc['world_size']}, but the attempt has {world_size} ranks")
        else:
            docs[rank] = doc
    if world_size <= 0:
        reasons.append("no rank dumps")
    reasons += check_ranks(docs, world_size, texts)
    return [docs[r] for r in sorted(docs)], reasons


def validate_attempt(
    attempt_dir: str | os.PathLike[str],
    cell_config: Mapping[str, Any],
    world_size: int | None = None,
    cell_id: str | None = None,
) -> list[str]:
    """Every reason an attempt folder does not hold complete, valid dumps of its cell; [] when it does.

    ``cell_config`` (and ``cell_id``) as the cell's ``cell.json`` holds them; ``world_size``
    defaults to the config's ``gpus × nodes``.
    """
    world = world_size if world_size is not None else world_size_of(cell_config)
    if world is None:
        return ["cell.json: gpus and nodes are not positive ints"]
    return read_attempt(attempt_dir, world, cell_config, cell_id)[1]


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate one dump; raises :class:`SchemaError` with every reason."""
    path = str(path)
    doc, error = read_json(path)
    if error is not None:
        shown = os.strerror(errno.ENOENT) if error == "missing" else error.removeprefix("unreadable ")
        raise SchemaError(path, [f"unreadable: {shown}"])
    reasons = validate(doc)
    if reasons:
        raise SchemaError(path, reasons)
    return doc
