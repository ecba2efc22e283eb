"""The last mutation run's numbers, read from mutmut's cache in ``mutants/``: a table per module for
docs/mutation.md, the survivors by name, and where the run's time went.

    .venv/bin/python scripts/mutation_report.py            # after `mutmut run` (see docs/mutation.md)
    .venv/bin/python scripts/mutation_report.py --slowest 15

mutmut keeps one ``<module>.py.meta`` file per mutated module: each mutant's exit code (1 killed, 0 survived,
None not checked yet, ...) and how long its tests took. Survivors marked equivalent are not in the cache at all:
their lines carry ``# pragma: no mutate`` with the reason (docs/mutation.md lists them).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

# mutmut 3's verdicts (mutmut/stats.py), folded into the columns of the report.
STATUS = {1: "killed", 3: "killed", 0: "survived", None: "not checked", 5: "no tests", 33: "no tests", 34: "skipped"}
TIMEOUT = {36, 24, -24, 152, 255}


def status(exit_code: int | None) -> str:
    return "timeout" if exit_code in TIMEOUT else STATUS.get(exit_code, "suspicious")


def function_of(mutant: str) -> str:
    """``fashion_conv.fit.x_run__mutmut_3`` -> ``fit.run``; methods read ``Class.method``."""
    module, _, rest = mutant.removeprefix("fashion_conv.").partition(".")
    name = rest.rsplit("__mutmut_", 1)[0].removeprefix("x_").removeprefix("xǁ").replace("ǁ", ".")
    return f"{module}.{name}"


def read(mutants_dir: Path) -> dict[str, dict]:
    metas = sorted(mutants_dir.glob("fashion_conv/**/*.py.meta"))
    if not metas:
        sys.exit(f"error: {mutants_dir} holds no mutmut results; run `mutmut run` first (docs/mutation.md)")
    return {str(m.relative_to(mutants_dir / "fashion_conv")).removesuffix(".meta"): json.loads(m.read_text()) for m in metas}


def table(results: dict[str, dict]) -> list[str]:
    rows = ["| module | mutants | killed | survived | timeouts | not checked | killed of checked | test time (s) |"]
    rows.append("|---|---|---|---|---|---|---|---|")
    total, total_time = Counter(), 0.0
    for module, meta in results.items():
        counts = Counter(status(code) for code in meta["exit_code_by_key"].values())
        counts["mutants"] = len(meta["exit_code_by_key"])
        seconds = sum(meta.get("durations_by_key", {}).values())
        total.update(counts)
        total_time += seconds
        rows.append(_row(f"`{module}`", counts, seconds))
    rows.append(_row("total", total, total_time))
    return rows


def _row(name: str, c: Counter, seconds: float) -> str:
    checked = c["killed"] + c["survived"] + c["timeout"]
    rate = f"{100 * (c['killed'] + c['timeout']) / checked:.1f} %" if checked else "-"
    cells = [c["mutants"], c["killed"], c["survived"], c["timeout"], c["not checked"]]
    return f"| {name} | " + " | ".join(f"{n:,}" for n in cells) + f" | {rate} | {seconds:,.0f} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=Path, default=Path("mutants"), help="mutmut's folder (default: mutants)")
    parser.add_argument("--slowest", type=int, default=10, help="how many functions to list by test time")
    args = parser.parse_args(argv)
    results = read(args.mutants)
    print("\n".join(table(results)))
    codes = {name: code for meta in results.values() for name, code in meta["exit_code_by_key"].items()}
    left = [name for name, code in codes.items() if status(code) not in ("killed", "not checked")]
    print(f"\nchecked and not killed ({len(left)}; `mutmut show NAME` prints one's change):")
    for name in left:
        print(f"  {status(codes[name]):12} {name}")
    seconds, counts = defaultdict(float), Counter()
    for meta in results.values():
        for name, duration in meta.get("durations_by_key", {}).items():
            seconds[function_of(name)] += duration
            counts[function_of(name)] += 1
    print(f"\nfunctions by test time (the {args.slowest} slowest; seconds summed over their mutants):")
    for name, total in sorted(seconds.items(), key=lambda kv: -kv[1])[: args.slowest]:
        print(f"  {total:8.0f} s  {counts[name]:4} mutants  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
