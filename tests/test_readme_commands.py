"""Every shell command in the README and the docs pages runs as written, in order, in a scratch folder with tiny data.

The commands are read from the ```bash blocks and the ``$ `` lines of README.md, then of the pages in mkdocs.yml's
navigation order (the mutation-testing page's commands take half an hour and are not run). The only change: every
``fashion_conv.fit`` run gets ``--data.val_size 100 --trainer.max_epochs 1`` appended, and every experiments
run ``STUDY_SPEED`` (by the ``python`` that PATH finds here), so training is short; each option the README gives is still parsed and used. Where the
README shows output, each shown line must appear in order, with its numbers and class names free to differ
(tiny data), the rest exact. The default fit must print no warning. SKIPPED lists what is not run, and why.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, tiny_arrays

from fashion_conv.data.csvio import CLASS_NAMES, write_csv

FIT_SPEED = "--data.val_size 100 --trainer.max_epochs 1"
# The experiments on 300 tiny images: every experiment of the pipeline, one seed, one epoch.
ROBUST_SPEED = "--val-size 100 --corrupt-images 50 --attack-images 20"  # the robustness report on the tiny data
STUDY_SPEED = "--train-size 200 --val-size 100 --test-size 100 --epochs 1 --seeds 1 --train-sizes 50 --kernel-sizes 3 --max-shift 2"
NOT_RUN_PAGES = {"mutation.md"}  # mutmut over the core: half an hour (docs/mutation.md)
SKIPPED = {
    "ray start --head --num-cpus 16": "starts a Ray cluster (test_studies.py runs the study on a local Ray instance)",
    "python -m fashion_conv.research.experiments --preset full --ray-address auto": "needs that Ray cluster, and hours",
    "bash scripts/setup.sh test && .venv/bin/python -m pytest": "runs this test suite; CI runs exactly this",
    "python -m fashion_conv.fit --trainer.accelerator gpu --trainer.devices 1": "needs a GPU",
    ".venv/bin/python -m fashion_conv.serve --checkpoint lightning_logs/cnn/version_0/checkpoints/best.ckpt --port 8000":
        "a server runs until stopped (test_serve.py starts real servers on free ports)",
    "bash scripts/setup.sh serve": "installs packages (CI's set-up installs the test extra, which holds serve's)",
    "python -m fashion_conv.serve --checkpoint lightning_logs/cnn/version_0/checkpoints/best.ckpt --port 8000":
        "a server runs until stopped (test_serve.py starts real servers on free ports)",
    "curl -F file=@docs/examples/test-row-1.png http://127.0.0.1:8000/predict": "needs that server running",
    "python scripts/load_test.py --checkpoint lightning_logs/cnn/version_0/checkpoints/best.ckpt --onnx model.onnx":
        "a load benchmark: a minute of wall time per back end (test_serve.py checks the server's answers)",
}
SETUP = "bash scripts/setup.sh && "  # installs packages and the real data: CI runs it before the tests
MY_NET = """from torch import nn

class MyNet(nn.Module):  # the README's example of a user's own backbone
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

    def forward(self, x):
        return self.net(x)
"""


def nav_pages(nav: list) -> list[str]:
    """The page paths of an mkdocs.yml ``nav``, in order."""
    pages = []
    for entry in nav:
        for value in entry.values() if isinstance(entry, dict) else [entry]:
            pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def documented_commands() -> list[tuple[str, list[str]]]:
    """The commands of README.md, then of each docs page in navigation order."""
    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"]
    pages = [REPO / "docs" / page for page in nav_pages(nav) if page not in NOT_RUN_PAGES]
    return [command for path in [REPO / "README.md", *pages] for command in readme_commands(path.read_text())]


def readme_commands(text: str) -> list[tuple[str, list[str]]]:
    """(command, lines of output the README shows for it), in README order; continuation lines joined."""
    found = []
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", text, re.DOTALL):
        lines = body.replace("\\\n", "").splitlines()
        if lang == "bash":
            found += [(re.sub(r"\s+#.*$", "", line).strip(), []) for line in lines if line.strip() and not line.startswith("#")]
        elif lang == "":
            for line in lines:
                if line.startswith("$ "):
                    found.append((re.sub(r"\s+", " ", line[2:]).strip(), []))
                elif found and found[-1][0] and lines[0].startswith("$ ") and line not in ("...", ""):
                    found[-1][1].append(line)
    return [(" ".join(c.split()), out) for c, out in found]


def shape(line: str) -> re.Pattern:
    """A shown output line as a pattern: numbers and class names may differ, ``...`` stands for anything (the
    README shortens long lines so), everything else is exact."""
    names = "|".join(re.escape(n) for n in sorted(CLASS_NAMES, key=len, reverse=True))
    number = rf"(?:\d[\d,.]*|{names})"
    parts = re.split(rf"(\.\.\.|\d[\d,.]*|{names})", line)
    return re.compile("".join(re.escape(p) if i % 2 == 0 else ".*" if p == "..." else number for i, p in enumerate(parts)))


def scratch(tmp_path: Path) -> dict:
    """A fresh-clone-like folder: tiny data, the README's docs and configs, ``python`` that shortens fits."""
    for split, n, seed in (("train", 400, 1), ("test", 200, 2)):
        write_csv(tmp_path / "data" / "processed" / f"fashion-mnist-{split}.csv", *tiny_arrays(n, seed))
    for name in ("docs", "configs", "scripts"):
        (tmp_path / name).symlink_to(REPO / name)
    (tmp_path / "my_pkg").mkdir()
    (tmp_path / "my_pkg" / "__init__.py").write_text("")
    (tmp_path / "my_pkg" / "nets.py").write_text(MY_NET)
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.write_text(
        f'#!/bin/bash\nif [ "$1 $2" = "-m fashion_conv.fit" ] || [ "$1 $2 $3" = "-m fashion_conv.cli fit" ]; then\n'
        f'  exec {sys.executable} "$@" {FIT_SPEED}\nfi\n'
        f'if [ "$1 $2" = "-m fashion_conv.research.experiments" ]; then\n  exec {sys.executable} "$@" {STUDY_SPEED}\nfi\n'
        f'if [ "$1 $2" = "-m fashion_conv.research.robust" ]; then\n  exec {sys.executable} "$@" {ROBUST_SPEED}\nfi\n'
        f'exec {sys.executable} "$@"\n'
    )
    (bin_dir / "fashion-conv").write_text(f'#!/bin/bash\nexec {python} -m fashion_conv.cli "$@"\n')
    for script in bin_dir.iterdir():
        script.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONWARNINGS": ""}


def test_readme_commands_are_found():
    readme = [c for c, _ in readme_commands((REPO / "README.md").read_text())]
    assert readme[0] == "bash scripts/setup.sh && .venv/bin/python -m fashion_conv.fit"
    assert "bash scripts/setup.sh test && .venv/bin/python -m pytest" in readme  # what .ci/run runs
    assert ".venv/bin/python -m fashion_conv.predict --checkpoint lightning_logs/cnn/version_0/checkpoints/best.ckpt docs/examples/test-row-1.png" in readme
    assert "python -m fashion_conv.fit --model.backbone resnet" in readme  # a $ line with its output
    commands = [c for c, _ in documented_commands()]
    assert "python -m fashion_conv.research.experiments --preset quick --workers 2" in commands  # docs/studies.md
    assert set(SKIPPED) <= set(commands), "a skipped command is no longer in the docs: drop it from SKIPPED"


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path):
    env = scratch(tmp_path)
    ran = {}  # command -> (exit status, output lines): a command shown twice runs once
    for command, shown in documented_commands():
        command = command.removeprefix(SETUP)
        if command in SKIPPED and not (torch.cuda.is_available() and "gpu" in command):
            continue
        if command not in ran:
            bash = ["bash", "-o", "pipefail", "-c", command]
            done = subprocess.run(bash, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
            ran[command] = done.returncode, (done.stdout + done.stderr).replace("\r", "\n").splitlines()
        returncode, output = ran[command]
        expect_error = any(line.startswith("error:") for line in shown)
        assert (returncode != 0) == expect_error, f"{command}\n" + "\n".join(output[-40:])
        lines = iter(output)
        for want in shown:
            pattern = shape(want)
            assert any(pattern.fullmatch(line) for line in lines), f"{command}: no line like {want!r} in\n" + "\n".join(output[-30:])
        if "fashion_conv.fit" in command and returncode == 0:  # a quiet console, resumed runs included
            noise = [line for line in output if re.search(r"Warning|\.py:\d+: |💡|deprecated", line) and "logging interval" not in line]
            assert not noise, f"{command}: {noise}"  # (tiny data has fewer batches than the logging interval; real data not)
    checkpoints = tmp_path / "lightning_logs" / "cnn" / "version_0" / "checkpoints"
    descriptive = [p for p in checkpoints.glob("best-*.ckpt")]
    assert len(descriptive) == 1 and descriptive[0].read_bytes() == (checkpoints / "best.ckpt").read_bytes()
