"""The ``edgenas`` command line.

Every sub-command validates its arguments up front; bad input ends with one line,
``edgenas: error: ...``, and exit status 2. Heavy imports (torch) happen inside the
commands that need them, so ``--help`` is instant. Each command group's arguments sit
beside its handlers: ``_lut`` (latency tables), ``_arch`` (arch strings), ``_stages``
(train, search, finalize, run, report), ``_device`` (predict, agent).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from edgenas.cli import _arch, _device, _lut, _stages
from edgenas.cli._common import Fail, Parser

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="edgenas",
        description="Hardware-aware neural architecture search: measure per-device latency tables, "
        "search a weight-sharing supernet, export verified ONNX models.",
    )
    sub = p.add_subparsers(dest="group", required=True, parser_class=Parser)
    for group in (_lut, _arch, _stages, _device):
        group.add_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from edgenas.errors import ExportCheckError
    from edgenas.latency_tables import AgentError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (Fail, ValueError, FileNotFoundError, LookupError, AgentError) as exc:
        if type(exc) in (KeyError, IndexError):  # a bug, not bad input: keep the traceback
            raise
        msg = exc.args[0] if isinstance(exc, LookupError) and exc.args else str(exc)
        print(f"edgenas: error: {msg}", file=sys.stderr)
        return 2
    except ExportCheckError as exc:  # not bad input: the export is wrong; the model card says which
        print(f"edgenas: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("edgenas: interrupted (finished work is saved; run the same command to resume)", file=sys.stderr)
        return 130
    return 0
