"""`adasr receive` refuses a bad token in one line, before any model loads or any port opens."""

from __future__ import annotations

from pathlib import Path

import pytest

from adasr_cli.main import main


def test_a_short_token_is_one_line_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["receive", "--token", "short", "--sink", "none", "--config-dir", str(tmp_path / "config")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().count("\n") == 0 and "at least 8 characters" in err and "Traceback" not in err
