"""``fashion-conv COMMAND``: dispatches to the modules' ``main(argv)``; unknown or missing commands are one error line."""

import shutil
import subprocess
import sys
from pathlib import Path

from fashion_conv import cli


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("fit", "predict", "export", "serve", "explain", "experiments", "ingredients", "robust", "bench", "prepare"):
        assert f"\n  {command} " in out


def test_dispatches_to_the_module(tiny_data_dir, capsys):
    assert cli.main(["prepare", "--data-dir", str(tiny_data_dir), "--no-download"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"train: {tiny_data_dir}/processed/fashion-mnist-train.csv (0.3 MB)"


def test_unknown_and_missing_commands(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert capsys.readouterr().err.startswith("error: fashion-conv: unknown command 'frobnicate'; choose one of fit, ")
    assert cli.run("no_such_module", []) == 1  # e.g. explain before its package is installed
    assert capsys.readouterr().err == "error: fashion-conv no_such_module: fashion_conv.no_such_module is not part of this installation\n"


def test_console_script_is_installed():
    script = shutil.which("fashion-conv", path=str(Path(sys.executable).parent))
    assert script, "pip install -e . creates it ([project.scripts] in pyproject.toml)"
    done = subprocess.run([script, "export", "--help"], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--weights" in done.stdout
