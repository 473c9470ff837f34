"""`crawl2chat chat` on the tiny work dir (tests/support/models.py): in a pseudo-terminal as a person
would use it, one-shot with --prompt, and its pieces in this process."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest

from cli.main import main
from tests.support.models import QUESTION, REPLY, ROOT, cli_env, one_torch_thread

FIRST_REPLY = "sft> Let me compute that. [calculator: 12*13 → 156] The answer is 156."
# What the model says next when it sees its first reply as written, calculator call as tool tokens.
SECOND_REPLY = "sft> Let me compute that."
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_two_turns_in_a_terminal_then_quit(tiny_work):
    pexpect = pytest.importorskip("pexpect", reason="pexpect is a dev dependency: pip install -e '.[dev]'")
    child = pexpect.spawn(sys.executable, ["-m", "cli.main", "chat", "--work-dir", str(tiny_work), "--model", "sft"],
                          cwd=str(ROOT), env=cli_env(), encoding="utf-8", timeout=30)
    try:
        child.expect_exact("you> ")
        assert "talking to sft" in child.before
        turns = []
        for question in (QUESTION, "And 7 plus 8?"):
            child.sendline(question)
            child.expect_exact("you> ")
            turns.append(child.before)
        replies = [next(line for line in turn.splitlines() if line.startswith("sft> ")) for turn in turns]
        assert [ANSI.sub("", r) for r in replies] == [FIRST_REPLY, SECOND_REPLY]
        assert "\x1b[36m[calculator: 12*13 → 156]\x1b[0m" in replies[0]  # set off in colour on a terminal
        child.sendline("/quit")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
    finally:
        if child.isalive():
            child.terminate(force=True)


def test_one_prompt_answers_and_exits(tiny_work):
    proc = subprocess.run([sys.executable, "-m", "cli.main", "chat", "--work-dir", str(tiny_work), "--model", "sft",
                           "--prompt", QUESTION], capture_output=True, text=True, timeout=60, cwd=ROOT, env=cli_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == FIRST_REPLY + "\n"  # not a terminal: no colour


def session(tiny_work, monkeypatch, capsys, typed: str, *extra: str) -> tuple[int, list[str]]:
    """`crawl2chat chat` in this process, reading `typed` as its input: exit code and printed lines."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(typed))
    with one_torch_thread():
        code = main(["chat", "--work-dir", str(tiny_work), "--model", "sft", *extra])
    return code, capsys.readouterr().out.replace("you> ", "\n").splitlines()


def test_the_end_of_input_ends_the_session_and_reset_forgets(tiny_work, monkeypatch, capsys):
    code, lines = session(tiny_work, monkeypatch, capsys, f"{QUESTION}\n{QUESTION}\n/reset\n{QUESTION}\n")
    assert code == 0
    replies = [line for line in lines if line.startswith("sft> ") or line.startswith("crawl2chat: new")]
    assert replies == [FIRST_REPLY, SECOND_REPLY, "crawl2chat: new conversation", FIRST_REPLY]


def test_sampling_options_and_a_checkpoint_directory_as_the_model(tiny_work, monkeypatch, capsys):
    checkpoint = str(next((tiny_work / "sft").glob("step-*")))
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    runs = []
    for seed in (1, 1, 2):
        main(["chat", "--work-dir", str(tiny_work), "--model", checkpoint, "--prompt", QUESTION,
              "--temperature", "1.5", "--top-k", "50", "--max-tokens", "12", "--seed", str(seed)])
        runs.append(capsys.readouterr().out)
    assert runs[0] == runs[1] != runs[2]
    assert all(run.startswith(f"{checkpoint}> ") for run in runs)


def test_a_reply_is_written_piece_by_piece_and_kept_as_parts(tiny_work):
    from cli.chat import Sampling, load_chat_model, model_index, speak

    class Terminal(io.StringIO):
        def __init__(self):
            super().__init__()
            self.flushes = 0

        def flush(self):
            self.flushes += 1

    loaded = load_chat_model(model_index(tiny_work), "sft", "cpu")
    out = Terminal()
    with one_torch_thread():
        parts = speak(loaded, [{"role": "user", "content": QUESTION}], Sampling(), out, colour=False)
    assert parts == REPLY
    assert out.getvalue() == FIRST_REPLY + "\n"
    assert out.flushes > 10  # each piece reaches the terminal as it is generated


def test_an_unknown_model_is_one_line_naming_the_known_ones(tiny_work):
    with pytest.raises(SystemExit) as exit_:
        main(["chat", "--work-dir", str(tiny_work), "--model", "nope", "--prompt", "hi"])
    assert exit_.value.code == ("crawl2chat: unknown model 'nope': the work dir has base, sft, rlhf "
                                "(or give a checkpoint directory)")


@pytest.mark.parametrize("command", [["chat", "--prompt", "hi"], ["serve-model", "--port", "1"]])
def test_a_work_dir_without_models_is_one_line(tmp_path, command):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--work-dir", str(tmp_path)])
    assert exit_.value.code == f"crawl2chat: no trained models in {tmp_path}: run `crawl2chat run` first"
