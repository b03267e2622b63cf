"""Line and branch coverage per package, from the ``.coverage`` file ``make test`` leaves.

coverage.py reports per file or in total; this sums its JSON report by package (libs/shared
and each service), then prints the total that ``[tool.coverage.report] fail_under`` checks.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import coverage

PACKAGES = {
    "libs/shared/": "shared",
    "services/gateway/": "gateway",
    "services/identity/": "identity",
    "services/agents/": "agents",
    "services/chat/": "chat",
}


def _package(path: str) -> str:
    for prefix, name in PACKAGES.items():
        if path.startswith(prefix):
            return name
    return "other"


def _percent(covered: int, total: int) -> str:
    return f"{100 * covered / total:6.2f}%" if total else "     -"


def main() -> int:
    if not Path(".coverage").exists():
        print("no .coverage here: run `make test` first", file=sys.stderr)
        return 1
    cov = coverage.Coverage()
    cov.load()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "coverage.json"
        cov.json_report(outfile=str(out))
        report = json.loads(out.read_text())
    sums: dict[str, list[int]] = {}
    for path, data in report["files"].items():
        summary = data["summary"]
        row = sums.setdefault(_package(path), [0, 0, 0, 0])
        row[0] += summary["covered_lines"]
        row[1] += summary["num_statements"]
        row[2] += summary["covered_branches"]
        row[3] += summary["num_branches"]
    print(f"{'package':<10} {'lines':>15} {'line %':>8} {'branches':>15} {'branch %':>8}")
    for name in [*PACKAGES.values(), "other"]:
        if name in sums:
            lines, statements, taken, branches = sums[name]
            print(
                f"{name:<10} {lines:>7}/{statements:<7} {_percent(lines, statements)} "
                f"{taken:>7}/{branches:<7} {_percent(taken, branches)}"
            )
    totals = report["totals"]
    print(f"total (lines and branches, as fail_under counts): {totals['percent_covered']:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
