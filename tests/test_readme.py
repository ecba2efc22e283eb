"""The README's import example runs as written (on tiny data, from a scratch folder)."""

import re
from pathlib import Path

from conftest import REPO


def readme_block(marker: str) -> str:
    text = (REPO / "README.md").read_text()
    after = text[text.index(marker) :]
    return re.search(r"```python\n(.*?)```", after, re.S).group(1)


def test_import_example_runs(tmp_path, monkeypatch, capsys, make_tiny_data):
    # 5,100 training rows: the DataModule's default validation split is 5,000.
    make_tiny_data(tmp_path / "data", n_train=5100, n_test=50)
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_block("run by tests/test_readme.py"), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "['cnn', 'cnn5', 'convnet', 'mlp']" in out and "test/acc" in out
    assert not Path("lightning_logs").exists()
