"""Print the README's findings table (Markdown) from a report's ``findings.csv``.

The README's table is generated, never written by hand:

    linstab report --model resnet56-akamaster --out out/report56      # ~20+ min on 2 cores
    python benchmarks/findings_table.py out/report56/data/findings.csv > /tmp/table.md

Paste the output under "Findings" in the README (``--rules`` adds the decision rule column).
With two models in one report, the section column says which model a row is about.
"""

from __future__ import annotations

import argparse
import sys

from linstab.report.findings import findings_table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("csv", help="a report's data/findings.csv")
    p.add_argument("--rules", action="store_true", help="add the decision rule column")
    args = p.parse_args(argv)
    try:
        print(findings_table(args.csv, rules=args.rules))
    except (OSError, ValueError) as exc:
        print(f"findings_table: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
