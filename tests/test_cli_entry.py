"""The console script's own start and end: a parser built for the one command named (the same
options, defaults and errors as the whole parser) and `check`'s quick exit, which must still
flush every stream and run every exit handler."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import cli
from harness.cli_parser import COMMAND_NAMES, build_parser

ROOT = Path(__file__).resolve().parents[1]

#: one command line per command, with options, so each parser's defaults and types are compared
ARGVS = [
    ["backends", "--json"],
    ["list", "-m", "rotary", "--grid", "full", "--json"],
    ["run", "-k", "gqa", "--backends", "ort-cpu", "--jobs", "2", "--timeout", "9.5", "--resume", "--no-repro"],
    ["locate", "gqa/x", "--backend", "tract", "--json"],
    ["extract", "m.onnx", "--name", "n", "--out", "d"],
    ["export", "gqa/x", "--out", "d"],
    ["report", "a.jsonl", "b.jsonl", "--out", "d", "--baseline", "c.jsonl"],
    ["check", "bundle", "--backends", "ort-cpu", "--timeout", "3"],
    ["twins", "build", "gemma3"],
    ["install-js"],
    ["install-webgpu"],
    ["bench", "--repeat", "7", "--no-runs", "--quiet"],
]


def test_every_command_is_named_once_and_has_a_handler():
    full = build_parser([])
    choices = next(a.choices for a in full._actions if a.dest == "cmd")
    assert list(choices) == list(COMMAND_NAMES)
    assert set(cli.COMMANDS) == set(COMMAND_NAMES)
    assert {a[0] for a in ARGVS} == set(COMMAND_NAMES)


@pytest.mark.parametrize("argv", ARGVS, ids=[a[0] for a in ARGVS])
def test_the_one_command_parser_reads_a_line_as_the_whole_parser_does(argv):
    assert vars(build_parser(argv).parse_args(argv)) == vars(build_parser([]).parse_args(argv))


@pytest.mark.parametrize("argv", [["check"], ["check", "b", "--jobs", "2"], ["nosuch"], []])
def test_a_bad_line_gets_the_same_error_either_way(argv, capsys):
    errors = []
    for parser in (build_parser(argv), build_parser([])):
        with pytest.raises(SystemExit) as e:
            parser.parse_args(argv)
        errors.append((e.value.code, capsys.readouterr().err))
    assert errors[0] == errors[1] and errors[0][0] == 2


def test_top_level_help_lists_every_command(run_cli):
    out = run_cli("--help", check=0).stdout
    assert all(name in out for name in COMMAND_NAMES)


def test_quick_exit_flushes_and_runs_the_exit_handlers(tmp_path):
    """What `check` skips is the interpreter's teardown only: buffered output still arrives and a
    temporary directory (removed by an exit handler) is still removed."""
    code = ("import atexit, sys, tempfile; from harness.cli import quick_exit; "
            "d = tempfile.TemporaryDirectory(dir=sys.argv[1]); open(d.name + '/f', 'w').close(); "
            "atexit.register(lambda: sys.stdout.write(' and from a handler')); "
            "sys.stdout.write('unflushed out'); sys.stderr.write('unflushed err'); quick_exit(3)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as a pipe is by default
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60,
                       env=env)
    assert p.returncode == 3
    assert p.stdout == "unflushed out and from a handler" and p.stderr == "unflushed err"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("user", [None, "3"])
def test_bench_runs_polygraphy_in_the_users_environment_not_the_tools(user):
    """harness/cli.py sets OPENBLAS_NUM_THREADS=1 for itself; `polygraphy run`, timed against
    `check`, must not inherit it where the user had not set it (it would skip OpenBLAS's thread
    start, which no user's shell does) and must keep the user's own value where they had."""
    code = ("import os, harness.cli; from harness.bench_process import user_environment; "
            "print(os.environ['OPENBLAS_NUM_THREADS'], user_environment().get('OPENBLAS_NUM_THREADS', 'unset'))")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if user is not None:
        env["OPENBLAS_NUM_THREADS"] = user
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == (["1", "unset"] if user is None else [user, user])


def test_check_started_with_the_collector_off_turns_it_back_on(bundle):
    """`entry` starts `check` with the cyclic collector off (start-up makes nothing collectable);
    the cells must run with it on, or a cell's reference cycles would hold their memory."""
    code = ("import gc, sys; from harness.check import check; gc.disable(); "
            "rc = check(sys.argv[1], ['reference']); print('GC', gc.isenabled()); sys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", code, str(bundle)], capture_output=True, text=True, timeout=120,
                       cwd=ROOT)
    assert p.returncode == 0 and "GC True" in p.stdout, p.stdout + p.stderr
