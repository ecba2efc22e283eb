"""scripts/mutation_report.py: the numbers docs/mutation.md quotes, read from mutmut's cache."""

import json
import subprocess
import sys

from conftest import REPO


def test_the_report_counts_each_verdict_per_module(tmp_path):
    meta = tmp_path / "mutants" / "fashion_conv" / "fit.py.meta"
    meta.parent.mkdir(parents=True)
    codes = {"fashion_conv.fit.x_run__mutmut_1": 1, "fashion_conv.fit.x_run__mutmut_2": 0, "fashion_conv.fit.x_run__mutmut_3": None,
             "fashion_conv.fit.xǁFashionCLIǁsetup__mutmut_1": 36, "fashion_conv.fit.xǁFashionCLIǁsetup__mutmut_2": 3}  # fmt: skip
    durations = {"fashion_conv.fit.x_run__mutmut_1": 0.5, "fashion_conv.fit.x_run__mutmut_2": 20.25, "fashion_conv.fit.xǁFashionCLIǁsetup__mutmut_1": 30.0}
    meta.write_text(json.dumps({"exit_code_by_key": codes, "durations_by_key": durations}))
    out = subprocess.run([sys.executable, REPO / "scripts" / "mutation_report.py", "--mutants", tmp_path / "mutants"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "| `fit.py` | 5 | 2 | 1 | 1 | 1 | 75.0 % | 51 |" in out  # killed 1 and 3 (pytest's internal error), timeout 36
    assert "| total | 5 | 2 | 1 | 1 | 1 | 75.0 % | 51 |" in out
    assert "checked and not killed (2;" in out
    assert "  survived     fashion_conv.fit.x_run__mutmut_2\n" in out and "  timeout      fashion_conv.fit.xǁFashionCLIǁsetup__mutmut_1\n" in out
    assert "        30 s     1 mutants  fit.FashionCLI.setup\n" in out and "        21 s     2 mutants  fit.run\n" in out


def test_the_report_says_when_there_is_no_run(tmp_path):
    out = subprocess.run([sys.executable, REPO / "scripts" / "mutation_report.py", "--mutants", tmp_path], capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr == f"error: {tmp_path} holds no mutmut results; run `mutmut run` first (docs/mutation.md)\n"
