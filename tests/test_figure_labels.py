"""Legend labels that fit their axes: a series named by many swept knobs is wrapped, never cut.

The whole figure is held to it in ``tests/test_pipeline_shape.py::test_the_results_table_and_report_show_the_shape``
(a ddp and a pipeline cell whose configs differ in 7 keys), where matplotlib's "Tight layout not applied"
is an error (pyproject.toml's filterwarnings).
"""

from __future__ import annotations

from analysis.figures import LABEL_WIDTH, _wrapped


def test_a_label_of_many_knobs_is_wrapped_to_the_legend_width():
    parts = ["ddp", "batch 32", *[f"cluster.link_{i}_gbps=12.5" for i in range(7)]]
    label = _wrapped(parts)
    assert len(label.splitlines()) > 1
    assert all(len(line) <= LABEL_WIDTH for line in label.splitlines())
    assert label.replace(",\n", ", ") == ", ".join(parts)  # every part kept, in order


def test_a_short_label_stays_one_line_and_a_sweep_name_leads_it():
    assert _wrapped(["ddp", "batch 32"]) == "ddp, batch 32"
    assert _wrapped(["sweep-a:", "ddp"]) == "sweep-a: ddp"
