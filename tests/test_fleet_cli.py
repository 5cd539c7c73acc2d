"""`tether reap` and `tether cancel`: through main(argv), checking tables, errors and exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import tether
from tests.support import lease_ran_out
from tether.cli import main
from tether.testing import ResponsesEmulator

CRASH_CHILD = Path(__file__).with_name("crash_child.py")
FLEET_CHILD = Path(__file__).with_name("fleet_child.py")


def test_reap_cancels_what_a_killed_process_left_and_hides_the_key(
    tmp_path: Path,
    emulator: ResponsesEmulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`tether reap` after a SIGKILL: every left response cancelled, the API key never shown."""
    secret = "sk-cli-secret-777"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    journal = tmp_path / "journal.sqlite3"
    child = subprocess.Popen(
        [sys.executable, str(CRASH_CHILD), emulator.base_url, str(journal), "2", "asyncio", "1.0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "READY"
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    emulator.wait_for_sync(lambda ledger: len(ledger.orphans()) == 2, timeout=10)
    anyio.run(lease_ran_out, tether.open_journal(journal))
    code = main(["reap", "--journal", str(journal), "--base-url", emulator.base_url])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2 stopped" in out
    assert emulator.ledger.orphans() == []
    assert secret not in out


def test_reap_of_a_mistyped_journal_is_an_error_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], emulator: ResponsesEmulator
) -> None:
    typo = tmp_path / "jornal" / "j.sqlite3"
    code = main(["reap", "--journal", str(typo), "--base-url", emulator.base_url])
    out = capsys.readouterr().out
    assert code == 1
    assert f"no journal at {typo}" in out.replace("\n", "")
    assert "Traceback" not in out
    assert not typo.parent.exists()


def test_reap_of_a_file_that_is_not_a_journal_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], emulator: ResponsesEmulator
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n" * 200)
    code = main(["reap", "--journal", str(notes), "--base-url", emulator.base_url])
    out = capsys.readouterr().out
    assert code == 1
    assert "not a tether journal" in out
    assert "Traceback" not in out


def test_reap_without_a_key_or_base_url_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    journal = tether.open_journal(tmp_path / "j.sqlite3")
    anyio.run(lambda: journal.intend("x", key=None, model="m", base_url="http://127.0.0.1:1/v1"))
    code = main(["reap", "--journal", str(journal.path)])
    assert code == 1
    assert "OPENAI_API_KEY" in capsys.readouterr().out


def test_reap_of_a_redis_that_is_down_names_the_url_but_not_the_password(
    capsys: pytest.CaptureFixture[str], emulator: ResponsesEmulator
) -> None:
    from tests.fleet_servers import free_port

    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    code = main(["reap", "--journal", url, "--base-url", emulator.base_url])
    out = capsys.readouterr().out
    assert code == 1
    assert "127.0.0.1" in out
    assert "hunter2-secret" not in out
    assert "Traceback" not in out


def test_cancel_stops_a_stream_another_process_owns(
    redis_url: str, emulator: ResponsesEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    worker = subprocess.Popen(
        [sys.executable, str(FLEET_CHILD), "worker", emulator.base_url, redis_url, "job-7", "trio", "3.0"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert worker.stdout is not None
        ready, response_id = worker.stdout.readline().split()
        assert ready == "READY"
        code = main(["cancel", "--journal", redis_url, "--key", "job-7"])
        out = capsys.readouterr().out
        assert code == 0, out
        assert "stopped by its owner" in out
        assert worker.stdout.readline().split() == ["ENDED", "cancel_requested"]
        assert worker.wait(timeout=30) == 0
    finally:
        worker.kill()
        worker.wait()
        if worker.stdout is not None:
            worker.stdout.close()
    assert emulator.ledger[response_id].status == "cancelled"


def test_cancel_of_an_unknown_key_exits_1(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["cancel", "--journal", redis_url, "--key", "nobody-has-this"])
    out = capsys.readouterr().out
    assert code == 1
    assert "nothing to cancel" in out
