"""Progress in a log file: one line per finished bar, never carriage-return frames."""

from __future__ import annotations

from edgenas.progress import LogLine, progress


def test_a_bar_writing_to_a_file_is_one_line_when_done(capsys):
    bar = progress(range(5), total=5, desc="epoch 1/2", unit="step")
    assert isinstance(bar, LogLine)  # pytest's captured stderr is not a terminal
    for _ in bar:
        bar.set_postfix(loss="0.123")
    with progress(total=3, desc="lut tiny fp32", unit="block") as b:
        b.update(2)
        b.update(1)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("epoch 1/2: 5/5 step in ") and lines[0].endswith("(loss 0.123)")
    assert lines[1].startswith("lut tiny fp32: 3/3 block in ")


def test_a_finetune_logs_one_line_per_epoch(digits_splits, tiny, capsys):
    from edgenas.distill import FitConfig, fit
    from edgenas.search_spaces import Arch, build_subnet

    net = build_subnet(tiny, Arch.parse("r16|k3e2|k3e2"))
    fit(net, digits_splits, FitConfig(epochs=2, max_steps_per_epoch=3), resolution=16, channels=1, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    assert [ln.split(":")[0] for ln in err.strip().splitlines()] == ["fit 1/2", "fit 2/2"]


def test_every_bar_method_the_package_calls_exists_on_a_log_line():
    """A method tqdm has and LogLine lacks fails only where stderr is a file (``make demo > log``)."""
    import re
    from pathlib import Path

    import edgenas

    called = set()
    for path in Path(edgenas.__file__).parent.rglob("*.py"):
        called |= set(re.findall(r"\bbar\.([a-z_]+)\(", path.read_text()))
    assert called, "no bar.method( calls found: the scan is broken"
    missing = sorted(m for m in called if not callable(getattr(LogLine, m, None)))
    assert missing == [], f"LogLine lacks {missing}"
