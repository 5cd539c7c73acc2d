"""The `tether` command: through main(argv) and as a subprocess, checking exit codes."""

from __future__ import annotations

import importlib.metadata
import os
import signal
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

import openai
import pytest

import tether
from tether import CancelReceipt, StreamOutcome
from tether.cli import _parser, _stopped, main
from tether.races import RaceAttempt, RaceResult

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


def test_race_with_first_token_and_stagger(
    emulator: ResponsesEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["race", "-m", "silent", "-m", "fast", "--stagger", "0.05", "--win", "first_token"]
    code = main([*argv, "--base-url", emulator.base_url, "hi"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "race (first_token)" in out
    assert "winner: #1 fast" in out
    assert "its answer read to the end" in out  # the winner's read, apart from the cancels


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
        ["emulator", "--port", "-1"],
        ["emulator", "--port", "70000"],
        ["emulator", "--port", "http"],
        ["emulator", "--host", "0.0.0.0", "--port", "0"],
        ["race", "-m", "gpt-5", "--grace", "-1", "hi"],
        ["race", "-m", "gpt-5", "--grace", "0", "hi"],
        ["race", "-m", "gpt-5", "--grace", "nan", "hi"],
        ["race", "-m", "gpt-5", "--grace", "soon", "hi"],
        ["race", "-m", "gpt-5", "--stagger", "inf", "hi"],
        ["race", "-m", "gpt-5", "--base-url", "notaurl", "hi"],
        ["race", "-m", "gpt-5", "--base-url", "ftp://127.0.0.1/v1", "hi"],
        ["race", "-m", "gpt-5", "--base-url", "http://", "hi"],
        ["race", "-m", "gpt-5", "--base-url", "http://127.0.0.1:99999/v1", "hi"],
    ],
)
def test_bad_arguments_exit_1_with_one_line_before_anything_runs(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked while parsing: no banner, no emulator started, no request sent."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("tether")
    assert len(captured.err.strip().splitlines()) == 1
    assert "Traceback" not in captured.err


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["emulator", "--port", "70000"], "--port: must be 0-65535"),
        (["race", "-m", "gpt-5", "--grace", "-1", "hi"], "--grace: must be a finite number > 0"),
        (["race", "-m", "m", "--base-url", "notaurl", "hi"], "--base-url: must be an http://"),
        (["emulator", "--host", "0.0.0.0"], "--allow-remote"),
    ],
)
def test_a_bad_argument_is_named_with_its_value(
    argv: list[str], shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 1
    assert shown in capsys.readouterr().err


def test_a_refused_connection_says_why_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Not just the SDK's bare "Connection error.": the cause is on the same line."""
    with socket.socket() as closed:  # bound, never listening: every connect is refused
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
        code = main(["race", "-m", "gpt-5", "--base-url", url, "hi"])
    out = capsys.readouterr().out
    assert code == 1
    assert "every attempt failed: Connection error. (" in " ".join(out.split())
    assert "Traceback" not in out


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    assert tether.__version__ == importlib.metadata.version("tether")
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"tether {tether.__version__}\n"


def test_every_option_of_every_command_has_help() -> None:
    parser = _parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    for name, command in [("tether", parser), *commands.choices.items()]:
        for action in command._actions:
            assert action.help, f"{name}: {action.option_strings or action.dest} has no help"


def _outcome(response_id: str, ended_at: float, status: str | None) -> StreamOutcome:
    receipt = None
    if status is not None:
        receipt = CancelReceipt(response_id=response_id, kind="server", status=status)
    return StreamOutcome(
        response_id=response_id,
        model="m",
        background=True,
        reason="race_lost" if status else "completed",
        status=status or "completed",
        events=3,
        deltas=1,
        last_sequence_number=2,
        receipt=receipt,
        started_at=0.0,
        ended_at=ended_at,
    )


def _result(win: str, losers: list[tuple[float, str]], winner_ended_at: float) -> RaceResult:
    winner = RaceAttempt(
        index=0,
        model="m",
        state="won",
        trigger="parallel",
        outcome=_outcome("resp_w", winner_ended_at, None),
    )
    lost = tuple(
        RaceAttempt(
            index=i,
            model="m",
            state="lost",
            trigger="parallel",
            outcome=_outcome(f"resp_{i}", ended_at, status),
        )
        for i, (ended_at, status) in enumerate(losers, start=1)
    )
    return RaceResult(
        winner=winner,
        losers=lost,
        attempts=(winner, *lost),
        win=win,
        started_at=0.0,
        decided_at=10.0,
        losers_confirmed_at=max(e for e, _ in losers),
        winner_ended_at=winner_ended_at,
        ended_at=max(winner_ended_at, *(e for e, _ in losers)),
    )


def test_the_summary_times_the_cancels_apart_from_the_winners_read() -> None:
    """Regression: with first_token, "all confirmed 1.988s" was the winner read to its end."""
    result = _result("first_token", [(10.020, "cancelled"), (10.035, "cancelled")], 11.988)
    assert _stopped(result) == (
        "2 loser(s) stopped, all confirmed 0.035s after the decision; "
        "its answer read to the end 1.988s after it"
    )


def test_the_summary_says_how_many_cancels_were_not_confirmed() -> None:
    result = _result("first_completed", [(10.5, "cancelled"), (15.0, "")], 10.0)
    assert _stopped(result) == "2 loser(s) stopped, 1/2 confirmed 5.000s after the decision"


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


def test_bad_input_in_a_real_process_is_one_line_and_no_traceback() -> None:
    process = subprocess.run(
        [sys.executable, "-m", "tether.cli", "emulator", "--port", "-1"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        check=False,
    )
    assert process.returncode == 1
    assert process.stdout == ""
    assert process.stderr == (
        "tether emulator: error: argument --port: must be 0-65535 (0: any free port), got '-1'\n"
    )


def test_version_in_a_real_process() -> None:
    process = subprocess.run(
        [sys.executable, "-m", "tether.cli", "--version"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        check=True,
    )
    assert process.stdout == f"tether {importlib.metadata.version('tether')}\n"


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


def test_python_m_tether_testing_serves_until_ctrl_c() -> None:
    """``ResponsesEmulator.serve``, in a process of its own: its URL answers, Ctrl-C stops it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tether.testing", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("Responses emulator on http://127.0.0.1:"), first
        base_url = first.split(" on ", 1)[1].split(" ", 1)[0]
        with openai.OpenAI(base_url=base_url, api_key="sk-emulator", max_retries=0) as client:
            response = client.responses.create(model="gpt-5-nano", input="hi")
        assert response.status == "completed"
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=30)
        assert "stopping" in out
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
