"""``realtime.thread_priority``: one thread's nice value, inherited by the threads it starts, the caller's untouched."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from realtime.thread_priority import lower_this_thread


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_a_lowered_thread_and_its_children_run_behind_the_caller() -> None:
    base = _nice()
    seen: dict[str, int | bool] = {}

    def child() -> None:
        seen["child"] = _nice()

    def worker() -> None:
        seen["lowered"] = lower_this_thread(3)
        seen["worker"] = _nice()
        started = threading.Thread(target=child)
        started.start()
        started.join()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    expected = min(19, base + 3)
    assert seen == {"lowered": True, "worker": expected, "child": expected}
    assert _nice() == base


def test_elsewhere_it_says_it_did_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    base = os.getpriority(os.PRIO_PROCESS, 0) if hasattr(os, "getpriority") else None
    assert lower_this_thread() is False
    if base is not None:
        assert os.getpriority(os.PRIO_PROCESS, 0) == base
