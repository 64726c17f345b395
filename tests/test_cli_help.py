"""``adasr --help`` answers at once: building the parser loads no heavy library, each subcommand loads its own.

No wall-clock budget: a fresh interpreter runs the real entry point's ``--help`` (and every subcommand's)
and reports which modules it loaded; the slow ones must not be among them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUBCOMMANDS = ("animate", "prepare", "train", "eval", "degrade", "export", "build-engine", "send", "receive", "cam",
               "demo")
#: Each takes a second or more to import; none is needed to describe a command.
HEAVY = ("torch", "numpy", "cv2", "mediapipe", "aiortc", "aiohttp", "av", "onnxruntime", "onnx", "tensorrt")

PROBE = """
import contextlib, io, json, runpy, sys
helps = {}
for argv in [[]] + [[name] for name in sys.argv[1:]]:
    sys.argv = ["adasr", *argv, "--help"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_module("adasr_cli", run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            code = exc.code
    helps[" ".join(argv)] = {"code": code, "text": out.getvalue()}
print(json.dumps({"helps": helps, "modules": sorted(sys.modules)}))
"""


def test_help_of_the_command_and_every_subcommand_loads_no_heavy_library() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE, *SUBCOMMANDS], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    helps = report["helps"]
    assert helps[""]["code"] == 0 and all(name in helps[""]["text"] for name in SUBCOMMANDS)
    for name in SUBCOMMANDS:
        assert helps[name]["code"] == 0 and helps[name]["text"].startswith(f"usage: adasr {name}"), name
    loaded = {module.split(".")[0] for module in report["modules"]}
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
