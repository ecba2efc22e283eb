"""The README's import example runs as written (on tiny data, from a scratch folder)."""

import re
from pathlib import Path

from conftest import REPO, tiny_arrays
from fashion_conv.csvio import write_csv


def readme_block(marker: str) -> str:
    text = (REPO / "README.md").read_text()
    after = text[text.index(marker) :]
    return re.search(r"```python\n(.*?)```", after, re.S).group(1)


def test_import_example_runs(tmp_path, monkeypatch, capsys):
    # 5,100 training rows: the DataModule's default validation split is 5,000.
    for split, n in (("train", 5100), ("test", 50)):
        write_csv(tmp_path / "data" / "processed" / f"fashion-mnist-{split}.csv", *tiny_arrays(n))
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_block("run by tests/test_readme.py"), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "['cnn', 'cnn5', 'convnet', 'mlp']" in out and "test/acc" in out
    assert not Path("lightning_logs").exists()
