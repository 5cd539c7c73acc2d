"""The `tether` command: through main(argv) and as a subprocess, checking exit codes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from tether.cli import main

if TYPE_CHECKING:
    from tether.testing import ResponsesEmulator


def test_demo_prints_a_winner_and_zero_orphans(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "winner: #" in out
    assert "tokens saved versus letting the losers run" in out
    assert "0 orphans, 0 still generating" in out


def test_demo_runs_on_trio_with_five_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--models", "5", "--backend", "trio", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "winner: #" in out
    assert "4 loser(s) stopped" in out
    assert "0 orphans" in out


def test_race_against_an_emulator_by_base_url(
    emulator: ResponsesEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["race", "-m", "slow", "-m", "fast", "--base-url", emulator.base_url, "hi"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "winner: #1 fast" in out
    # both attempts start at once: the ledger's order is the server's arrival order
    assert {r.model: r.status for r in emulator.ledger} == {
        "slow": "cancelled",
        "fast": "completed",
    }
    assert emulator.ledger.orphans() == []


def test_race_with_first_token_and_stagger(
    emulator: ResponsesEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["race", "-m", "silent", "-m", "fast", "--stagger", "0.05", "--win", "first_token"]
    code = main([*argv, "--base-url", emulator.base_url, "hi"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "race (first_token)" in out
    assert "winner: #1 fast" in out


def test_race_without_key_or_base_url_uses_the_embedded_emulator(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(["race", "-m", "gpt-5-nano", "-m", "o4-mini", "Hello"]) == 0
    out = capsys.readouterr().out
    assert "embedded emulator" in out
    assert "winner: #0 gpt-5-nano" in out


def test_unknown_model_on_the_embedded_emulator_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(["race", "-m", "no-such-model", "hi"]) == 1
    out = capsys.readouterr().out
    assert "unknown model 'no-such-model'" in out
    assert "Traceback" not in out


def test_api_errors_end_in_one_line_and_exit_1(
    emulator: ResponsesEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["race", "-m", "nope", "-m", "nope-2", "--base-url", emulator.base_url, "hi"])
    out = capsys.readouterr().out
    assert code == 1
    assert "every attempt failed" in out
    assert "does not exist" in out
    assert "Traceback" not in out


def test_the_api_key_is_never_printed(
    emulator: ResponsesEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-do-not-print")
    main(["race", "-m", "fast", "-m", "nope", "--base-url", emulator.base_url, "hi"])
    captured = capsys.readouterr()
    assert "sk-secret" not in captured.out + captured.err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["nope"],
        ["race", "hi"],
        ["race", "-m", "fast", "--stagger", "-1", "hi"],
        ["race", "-m", "fast", "--win", "last", "hi"],
        ["demo", "--models", "9"],
        ["demo", "--backend", "curio"],
    ],
)
def test_bad_arguments_exit_1_with_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("tether")
    assert len(err.strip().splitlines()) == 1


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out


def test_missing_rich_is_a_clear_message_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "rich.console", None)
    assert main(["demo"]) == 1
    assert 'pip install "tether[cli]"' in capsys.readouterr().err


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_ctrl_c_cancels_every_attempt_on_the_server_and_exits_130(
    emulator: ResponsesEmulator,
) -> None:
    argv = ["race", "--base-url", emulator.base_url, "-m", "slow", "-m", "slow", "hi"]
    with subprocess.Popen(
        [sys.executable, "-m", "tether.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    ) as process:
        try:
            emulator.wait_for_sync(
                lambda ledger: len(ledger) == 2 and all(r.tokens_generated > 0 for r in ledger),
                timeout=30,
            )
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=30)
        finally:
            process.kill()
    assert process.returncode == 130, out + err
    assert "Interrupted: cancelled 2 response(s) on the server" in out
    assert [r.status for r in emulator.ledger] == ["cancelled", "cancelled"]
    assert emulator.ledger.orphans() == []


def test_emulator_command_serves_until_ctrl_c() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "tether.cli", "emulator", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    ) as process:
        try:
            assert process.stdout is not None
            first = process.stdout.readline()
            assert first.startswith("Responses emulator on http://127.0.0.1:")
            base_url = first.split()[3]
            import openai

            with openai.OpenAI(base_url=base_url, api_key="sk-x") as client:
                response = client.responses.create(model="gpt-5-nano", input="hi")
            assert response.status == "completed"
            process.send_signal(signal.SIGINT)
            process.communicate(timeout=30)
        finally:
            process.kill()
    assert process.returncode == 0
