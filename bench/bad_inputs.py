"""Bad inputs tried as a user would, each through the command line: the line it prints and its exit code.

Builds what it needs in a temporary folder (a tiny-space table, a one-epoch supernet on
scikit-learn's digits, an image folder with a truncated PNG, an agent on loopback) and
writes bench/results/bad_inputs.{json,md}, the README's reliability table.

    python bench/bad_inputs.py          # about 2 minutes
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from edgenas.io import atomic_write_json, atomic_write_text

TOKEN = "bad-inputs-token"
EDGENAS = [sys.executable, "-m", "edgenas.cli"]


def cli(*args: str, cwd: Path) -> dict:
    r = subprocess.run([*EDGENAS, *args], capture_output=True, text=True, cwd=cwd, timeout=900)
    lines = [ln for ln in (r.stderr.strip() or r.stdout.strip()).splitlines() if ln.strip()]
    return {"exit": r.returncode, "lines": len(lines), "output": lines[-1] if lines else ""}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: bytes, token: str) -> dict:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return {"exit": r.status, "lines": 1, "output": r.read().decode()[:200]}
    except urllib.error.HTTPError as e:
        return {"exit": e.code, "lines": 1, "output": e.read().decode()[:200]}


def image_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(80):
            Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(root / c / f"{i:03d}.png")
    data = (root / "dog" / "079.png").read_bytes()
    (root / "dog" / "079.png").write_bytes(data[: len(data) // 2])  # truncated, after the probed files


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="edgenas-bad-inputs-"))
    rows: list[dict] = []

    def tried(what: str, how: str, result: dict) -> None:
        rows.append({"input": what, "command": how, **result})
        print(f"{result['exit']:>3}  {what}: {result['output']}", flush=True)

    # what the cases need: a tiny table, a trained tiny run, a corrupt table, an image folder
    lut = work / "tiny.json"
    subprocess.run(
        [*EDGENAS, "lut", "build", "--space", "tiny", "--out", str(lut), "--rounds", "5", "--quiet"], check=True
    )
    subprocess.run([*EDGENAS, "lut", "validate", str(lut), "--n", "12", "--quiet"], check=True, capture_output=True)
    base = {
        "run_dir": str(work / "run"),
        "space": "tiny",
        "data": {"name": "digits"},
        "train": {"epochs": 1, "batch_size": 64},
        "search": {"n_trials": 4, "population_size": 4},
        "finalize": {"distill_epochs": 1, "prune": {"max_steps": 0}, "qat_epochs": 0, "measure_rounds": 3},
        "devices": [{"name": "cpu", "lut": str(lut), "budget_ms": 10.0}],
    }
    cfg = work / "run.yaml"
    cfg.write_text(yaml.safe_dump(base))
    subprocess.run([*EDGENAS, "train", "--config", str(cfg), "--quiet"], check=True)

    def config(name: str, **changes) -> str:
        data = json.loads(json.dumps(base))
        for key, value in changes.items():
            section, _, field = key.partition("__")
            data[section] = value if not field else {**data[section], field: value}
        path = work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return str(path)

    # the agent
    port = free_port()
    env = {**os.environ, "EDGENAS_AGENT_TOKEN": TOKEN}
    agent = subprocess.Popen([*EDGENAS, "agent", "--port", str(port)], env=env, stdout=subprocess.DEVNULL)
    time.sleep(3)
    url = f"agent://127.0.0.1:{port}"
    try:
        tried(
            "agent unreachable",
            "`lut build --device agent://127.0.0.1:1`",
            cli(
                "lut",
                "build",
                "--space",
                "tiny",
                "--device",
                "agent://127.0.0.1:1",
                "--token",
                TOKEN,
                "--out",
                str(work / "a.json"),
                cwd=work,
            ),
        )
        tried(
            "wrong agent token",
            "`lut build --device agent://HOST --token WRONG`",
            cli(
                "lut",
                "build",
                "--space",
                "tiny",
                "--device",
                url,
                "--token",
                "wrong-token",
                "--out",
                str(work / "a.json"),
                cwd=work,
            ),
        )
        measure = f"http://127.0.0.1:{port}/measure"
        tried(
            "non-ONNX model sent to the agent",
            "POST /measure with a text file as the model (HTTP status)",
            post(measure, json.dumps({"models": ["aGVsbG8="], "reference": "aGVsbG8="}).encode(), TOKEN),
        )
        tried(
            "non-JSON body sent to the agent",
            "POST /measure with `hello` (HTTP status)",
            post(measure, b"hello", TOKEN),
        )
        tried(
            "agent request with a wrong token",
            "POST /measure, wrong token (HTTP status)",
            post(measure, b"hello", "wrong-token"),
        )
    finally:
        agent.send_signal(signal.SIGINT)
        agent.wait(timeout=30)

    # tables
    (work / "corrupt.json").write_text('{"format": "edgenas-latency-table/1", "header": ')
    tried("corrupt table (cut JSON)", "`lut show corrupt.json`", cli("lut", "show", "corrupt.json", cwd=work))
    data = json.loads(lut.read_text())
    del data["header"]["threads"]
    (work / "fields.json").write_text(json.dumps(data))
    tried(
        "table with header fields missing",
        "`arch predict ARCH --lut fields.json`",
        cli("arch", "predict", "r16|k3e2|k3e2", "--lut", "fields.json", cwd=work),
    )
    tried(
        "table of another precision for a device",
        "`search` with `devices[].precision: int8` and an fp32 table",
        cli(
            "search",
            "--config",
            config("int8", devices=[{**base["devices"][0], "precision": "int8"}]),
            "--quiet",
            cwd=work,
        ),
    )

    # data
    tried(
        "missing dataset path",
        "`train` with `data.name: ./no-such-folder`",
        cli("train", "--config", config("nodata", data={"name": str(work / "no-such-folder")}), "--quiet", cwd=work),
    )
    image_folder(work / "images")
    tried(
        "truncated PNG in an image folder",
        "`train` on an image folder with one file cut in half",
        cli(
            "train",
            "--config",
            config("images", run_dir=str(work / "run_images"), data={"name": str(work / "images")}),
            "--quiet",
            cwd=work,
        ),
    )

    # storage
    tried(
        "storage whose driver is missing",
        "`search --storage mysql://u@host/db`",
        cli("search", "--config", str(cfg), "--storage", "mysql://u@host/db", "--quiet", cwd=work),
    )
    tried(
        "storage that cannot be reached",
        "`search --storage postgresql+psycopg://u@127.0.0.1:1/db`",
        cli("search", "--config", str(cfg), "--storage", "postgresql+psycopg://u@127.0.0.1:1/db", "--quiet", cwd=work),
    )

    # a killed finalize resumed with another arch
    cmd = [*EDGENAS, "finalize", "--config", str(cfg), "--arch", "r16|k3e2|k3e2", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = work / "run" / "finalize" / "cpu"
    deadline = time.time() + 300
    while not (out / "distilled.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = subprocess.run(
        [*EDGENAS, "finalize", "--config", str(cfg), "--arch", "r24|k5e3|k3e2se"],
        capture_output=True,
        text=True,
        cwd=work,
    )
    said = [ln for ln in r.stdout.splitlines() if "other inputs" in ln]
    tried(
        "finalize killed, resumed with another `--arch`",
        "`finalize --arch A`, killed; `finalize --arch B`",
        {"exit": r.returncode, "lines": len(said), "output": said[0] if said else r.stdout.strip()[-200:]},
    )

    out_dir = Path("bench/results")
    atomic_write_json(out_dir / "bad_inputs.json", rows)
    md = [
        "# Bad inputs tried",
        "",
        "`python bench/bad_inputs.py`: each input through the command line (the agent's "
        "own answers as HTTP statuses); the last line printed and the exit code.",
        "",
        "| input | tried with | exit | what it prints |",
        "|---|---|---|---|",
    ]
    for r in rows:
        text = re.sub(r"127\.0\.0\.1:\d{4,}", "127.0.0.1:PORT", r["output"].replace(str(work), "…"))
        text = text.replace("|", "\\|")
        md.append(f"| {r['input']} | {r['command'].replace('|', chr(92) + '|')} | {r['exit']} | `{text}` |")
    atomic_write_text(out_dir / "bad_inputs.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
