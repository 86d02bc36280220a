"""What every command group shares: the one-line-error parser, argument types, config loading."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = [
    "Fail",
    "Parser",
    "float_list",
    "int_list",
    "load_config",
    "load_space",
    "parse_arch",
    "positive",
    "quiet_optuna",
    "torch_device_arg",
]


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        self.exit(2, f"edgenas: error: {message} (see '{self.prog} --help')\n")


def quiet_optuna() -> None:
    """Optuna's line per trial would drown the search's own progress: warnings only (the command's choice;
    the library leaves Optuna's verbosity to its caller)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


class Fail(Exception):
    """An error the user can fix; printed as one line."""


def load_space(name_or_path: str):
    from edgenas.pipeline import load_space as load

    return load(name_or_path)


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def parse_arch(space: Any, text: str):
    try:
        return space.parse(text)
    except ValueError as exc:
        raise Fail(str(exc)) from exc


def _torch_device(text: str) -> str:
    from edgenas.accelerator import resolve_device

    try:
        resolve_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def torch_device_arg(parser: argparse.ArgumentParser, overrides: str) -> None:
    parser.add_argument(
        "--torch-device",
        type=_torch_device,
        metavar="DEVICE",
        help=f"where torch trains and evaluates: auto (CUDA, then MPS, then CPU), cpu, cuda, "
        f"cuda:N, mps; overrides {overrides} (the choice is recorded in the manifests)",
    )


def load_config(args: argparse.Namespace, overrides: dict[str, dict[str, Any]]):
    from edgenas.config import load_config as load

    return load(args.config, overrides)
