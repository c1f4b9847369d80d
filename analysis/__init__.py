"""Rank dumps → tidy tables, statistics, figures and an HTML report.

Import-light on purpose: ``dnnbench --help`` and the laptop install (``.[analysis]``)
must not pay for pandas or matplotlib until a command needs them. Submodules:

- :mod:`analysis.load` — sweep folders → one row per cell × phase (attempt selection,
  validation, incomplete cells with reasons)
- :mod:`analysis.stats` — mean, median, std, t-based 95 % CI, CV
- :mod:`analysis.table` — repeats combined, speedup and scaling efficiency
- :mod:`analysis.confounds` — environment differences between compared cells
- :mod:`analysis.env_effect` — framework × environment: both effects, their interaction, the missing cells
- :mod:`analysis.figures`, :mod:`analysis.report`, :mod:`analysis.compare`, :mod:`analysis.pull`
- :mod:`analysis.cli` — the thin command-line layer
"""
