"""The commands that run on or for the device: ``predict`` (an exported model) and ``agent`` (a measurement server)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from edgenas.cli._common import Fail, positive
from edgenas.latency_tables import RUNTIMES

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    _add_predict(sub)
    _add_agent(sub)


def _add_predict(sub: argparse._SubParsersAction) -> None:
    pr = sub.add_parser(
        "predict",
        help="run an exported model on images or a data set (ONNX Runtime only, no torch)",
        description="Run a model finalize exported, with the preprocessing and classes it carries. TARGET: an "
        "image, a folder of images (top classes of each), the model's training data set by its "
        "data.name (accuracy on the test split its model card reports), or other labelled data "
        "(an image folder ROOT/<class>/<image>, a .npz, a built-in name: accuracy on all of it).",
    )
    pr.add_argument("model", help="an .onnx file written by finalize")
    pr.add_argument("target", help="image, folder, or data set")
    pr.add_argument("--top", type=positive, default=3, help="classes shown per image (default 3)")
    pr.set_defaults(func=_predict)


def _add_agent(sub: argparse._SubParsersAction) -> None:
    ag = sub.add_parser(
        "agent",
        help="serve latency measurements on this device over HTTP",
        description="Run on the target device (needs only numpy and the runtime: onnxruntime; openvino, executorch "
        "or ncnn with --runtime). Receives models in the runtime's format (ONNX, an ExecuTorch .pte delegated to "
        "XNNPACK, an ncnn .param/.bin), times them with the latency-table protocol and returns the timings and "
        "the device fingerprint. Every request needs the token. Binds 127.0.0.1 unless --host says otherwise.",
    )
    ag.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ag.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free port)")
    ag.add_argument("--token", help="shared secret, >= 8 characters (default: $EDGENAS_AGENT_TOKEN)")
    ag.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="onnxruntime",
        help="what runs the models (default onnxruntime)",
    )
    ag.add_argument("--providers", default="cpu", help="ONNX Runtime's execution providers, comma-separated (cpu)")
    ag.add_argument("--ov-device", default="CPU", help="OpenVINO device: CPU (default), GPU, NPU")
    ag.add_argument("--threads", type=positive, default=1, help="inference threads (default 1)")
    ag.add_argument("--max-mb", type=positive, default=256, help="request size limit in MB (default 256)")
    ag.add_argument(
        "--max-connections", type=positive, default=8, help="connections served at once; more get a 503 (default 8)"
    )
    ag.set_defaults(func=_agent)


def _predict(args: argparse.Namespace) -> None:
    from edgenas.predict import Model, accuracy_on, image_paths, predict_images

    model = Model.load(args.model)
    paths = image_paths(Path(args.target))
    if paths is None:
        r = accuracy_on(model, args.target)
        print(f"{args.target} ({r['split']}, {r['images']:,} images): accuracy {r['accuracy'] * 100:.2f} %")
        return
    for row in predict_images(model, paths, args.top):
        print(f"{row['image']}: " + ", ".join(f"{c} {p * 100:.1f} %" for c, p in row["top"]))


def _agent(args: argparse.Namespace) -> None:
    from edgenas.latency_tables import TOKEN_ENV, serve_agent

    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        raise Fail(f"the agent needs a token: --token T or ${TOKEN_ENV}")
    serve_agent(
        host=args.host,
        port=args.port,
        token=token,
        providers=args.providers.split(","),
        threads=args.threads,
        runtime=args.runtime,
        ov_device=args.ov_device.upper(),
        max_bytes=args.max_mb * 1024 * 1024,
        max_connections=args.max_connections,
    )
