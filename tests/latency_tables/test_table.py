"""The table file: round trip, header checks, corrupt files."""

from __future__ import annotations

import json

import pytest

from edgenas.latency_tables import LatencyTable, LocalBackend, TableMismatchError, build_table


def test_round_trip(tmp_path):
    table = LatencyTable(header={"device": "local-cpu", "precision": "fp32"}, entries={"k": {"ms": 1.0}})
    path = table.save(tmp_path / "t.json")
    again = LatencyTable.load(path)
    assert again.header == table.header and again.entries == table.entries
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write leaves no temp file


def test_header_mismatch_is_refused(tiny_table):
    table = LatencyTable.load(tiny_table)
    assert table.calibration is not None
    with pytest.raises(TableMismatchError) as err:
        LatencyTable.load(tiny_table, expect={"precision": "int8", "threads": 1})
    assert "precision: table has 'fp32', requested 'int8'" in str(err.value)
    LatencyTable.load(tiny_table, expect={"precision": "fp32", "threads": table.header["threads"]})


def test_resuming_with_other_settings_is_refused(tiny_table, tiny):
    with pytest.raises(TableMismatchError, match="threads: table has 1, requested 2"):
        build_table(tiny, LocalBackend(threads=2), tiny_table, progress=False)


def test_corrupt_and_foreign_files_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        LatencyTable.load(bad)
    bad.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="is not an edgenas latency table"):
        LatencyTable.load(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LatencyTable.load(tmp_path / "missing.json")
