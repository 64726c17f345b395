"""Stopping the programs tests start beside Python (browsers, Xvfb, PulseAudio, coturn, `adasr receive`)."""

from __future__ import annotations

import subprocess


def stop_process(process: subprocess.Popen, timeout_s: float = 10.0) -> None:  # type: ignore[type-arg]
    """Ask ``process`` to end (SIGTERM), and kill it if it has not within ``timeout_s``: a test's teardown never
    hangs on a program that ignores the request."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
