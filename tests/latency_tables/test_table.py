"""The table file: round trip, header checks, corrupt files."""

from __future__ import annotations

import json
import re

import pytest

from edgenas.latency_tables import LatencyTable, LocalBackend, TableMismatchError, build_table


def test_round_trip(tmp_path, tiny_table):
    header = LatencyTable.load(tiny_table).header
    table = LatencyTable(header=header, entries={"k": {"ms": 1.0, "rel": 2.0, "params": 10}})
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


def test_a_table_timed_on_graphs_of_an_earlier_revision_is_refused(tiny_table, tmp_path):
    """A table from before graph revisions were counted holds revision 1: fine for ONNX files, whose
    graphs did not change for their runtime, refused for a format whose graphs did (ExecuTorch's)."""
    data = json.loads(tiny_table.read_text())
    assert data["header"]["graph_revision"] == 1  # an ONNX Runtime table
    del data["header"]["graph_revision"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    old = LatencyTable.load(tmp_path / "old.json")
    fingerprint = {k: old.header[k] for k in ("cpu", "runtime", "onnxruntime", "threads", "providers")}
    old.check_device(fingerprint, "old")
    with pytest.raises(TableMismatchError, match="graph_revision: table has 1, requested 2"):
        old.check_device({**fingerprint, "format": "pte"}, "old")


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


def _damaged(tiny_table, tmp_path, change) -> str:
    data = json.loads(tiny_table.read_text())
    change(data)
    path = tmp_path / "damaged.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda d: d["header"].pop("threads"), "its header lacks ['threads']"),
        (lambda d: d.pop("header"), "has no header"),
        (lambda d: next(iter(d["entries"].values())).pop("rel"), "lacks 'rel' or 'params' (1 such)"),
        (lambda d: d["calibration"].pop("coef"), "its calibration lacks 'features' or 'coef'"),
    ],
)
def test_a_table_with_fields_missing_is_one_line_and_exit_2(tiny_table, tmp_path, capsys, change, fragment):
    from edgenas.cli import main

    path = _damaged(tiny_table, tmp_path, change)
    with pytest.raises(ValueError, match=re.escape(fragment)):
        LatencyTable.load(path)
    assert main(["arch", "predict", "r16|k3e2|k3e2", "--lut", path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0]


def test_an_unfinished_table_cannot_predict(tiny_table, tmp_path):
    from edgenas.latency_tables import Predictor

    path = _damaged(tiny_table, tmp_path, lambda d: d["header"].pop("reference_ms"))
    with pytest.raises(ValueError, match=r"not finished \(its header has no \['reference_ms'\]\): resume its build"):
        Predictor(LatencyTable.load(path))
