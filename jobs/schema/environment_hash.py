"""The environment fingerprint's comparable keys and its hash, as every version of dnnbench took it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from jobs.schema.memo import ExactMemo

# Environment fields that can change a result: equal values make two cells comparable.
# Hashed by environment_hash (below) for every dump, read by analysis/ (confound check).
COMPARABLE_KEYS = (
    "python",
    "torch",
    "torchvision",
    "cuda",
    "cudnn",
    "nccl",
    "horovod",
    "threads",
    "numerics",
    "cpu_model",
    "gpu_name",
    "gpu_driver",
    "dnnbench",
    # Recorded since issue 21: the performance variables (LD_PRELOAD, OMP_*, MALLOC_*, …), the
    # speed-relevant shared libraries mapped, every installed distribution's version.
    "variables",
    "libraries",
    "packages",
)
# Comparable keys added after dumps were written without them: hashed only when present, so an
# old dump's stored hash stays its hash (such a dump still combines; it is flagged against a new one).
ADDED_COMPARABLE_KEYS = frozenset(("variables", "libraries", "packages"))
ENVIRONMENT_REQUIRED = ("python", "torch", "hostname", "dnnbench", "threads")
# Environment fields added after the first dumps were written, with what those dumps ran
# with (PyTorch's defaults: dnnbench set none of them then). Readers fill them in before
# hashing, so an old and a new dump from one environment still hash alike.
ADDED_ENVIRONMENT_DEFAULTS: dict[str, Any] = {
    "numerics": {
        "cudnn_deterministic": False,
        "cudnn_allow_tf32": True,
        "matmul_allow_tf32": False,
        "float32_matmul_precision": "highest",
    },
}


def with_environment_defaults(env: Mapping[str, Any]) -> dict[str, Any]:
    return {**ADDED_ENVIRONMENT_DEFAULTS, **env}


def environment_hash(env: Mapping[str, Any], *, decoded: bool = False) -> str:
    """12 hex digits over the ``COMPARABLE_KEYS`` of an environment fingerprint.

    ``decoded``: ``env`` was parsed from JSON text, so it holds JSON's types only and the memo below needs
    no walk to be sure of it.
    """
    comparable = {key: env.get(key) for key in COMPARABLE_KEYS if key in env or key not in ADDED_COMPARABLE_KEYS}
    return _hash_of(comparable, decoded)


def _hash_of(comparable: Mapping[str, Any], decoded: bool = False) -> str:
    return _HASHES.get(comparable, lambda: _sha256_of(comparable), decoded=decoded)


def _sha256_of(comparable: Mapping[str, Any]) -> str:
    text = json.dumps(comparable, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# The JSON text and the SHA-256 run once per environment of a sweep.
_HASHES: ExactMemo[str] = ExactMemo()


# Comparable keys hashed (as null where absent) since they were added, but not hashed at all by the
# versions before: a dump of those versions lacks the key and stored the hash over the keys it had.
HASHED_SINCE_ADDED = ("numerics",)


def environment_hashes(env: Mapping[str, Any], *, decoded: bool = False) -> tuple[str, ...]:
    """Every hash a dump holding ``env`` may have stored: :func:`environment_hash` (as this version
    hashes), and, for a dump lacking a key of :data:`HASHED_SINCE_ADDED`, the hash its version took."""
    # Looked up on the package: the function callers see (and may patch) is jobs.schema's.
    from jobs import schema as package

    current = package.environment_hash(env, decoded=True) if decoded else package.environment_hash(env)
    absent = [key for key in HASHED_SINCE_ADDED if key not in env]
    if not absent:
        return (current,)
    keys = [k for k in COMPARABLE_KEYS if k not in absent and (k in env or k not in ADDED_COMPARABLE_KEYS)]
    return current, _hash_of({key: env.get(key) for key in keys}, decoded)


def environment_reasons(doc: Mapping[str, Any], *, decoded: bool = False) -> list[str]:
    """The stored ``environment_hash`` against the hash of the stored environment (never trusted as written);
    ``decoded`` as for :func:`environment_hash`."""
    stored, hashes = doc["environment_hash"], environment_hashes(doc["environment"], decoded=decoded)
    if stored in hashes:
        return []
    return [f"environment_hash: stored {stored!r}, but the environment hashes to {hashes[0]!r} "
            "(the environment was edited, or the hash)"]  # fmt: skip
