"""Print a short digest of a pytest JUnit XML report: each failing test and the
last lines of its failure (CI shows only the end of the log, which a timeout's
thread dumps would otherwise fill)."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET

MAX_TESTS = 6
TAIL = 12


def main(path: str) -> None:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        print(f"    (no JUnit report to summarize: {exc})")
        return
    bad = []
    for case in root.iter("testcase"):
        for kind in ("failure", "error"):
            node = case.find(kind)
            if node is not None:
                name = f"{case.get('classname', '')}::{case.get('name', '')}"
                bad.append((kind, name, node.get("message") or "", node.text or ""))
    if not bad:
        return
    print(f"==> failures ({len(bad)}), in run order; the first {min(len(bad), MAX_TESTS)}:")
    for kind, name, message, text in bad[:MAX_TESTS]:
        print(f"--- {kind.upper()} {name}")
        print(f"    {message[:300]}")
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("~")]
        # the assertion / exception lines and the test's own frames, not thread dumps
        keep = [ln for ln in lines if ln.startswith(("E ", "tests/", "nbgroups/"))] or lines
        for ln in keep[-TAIL:]:
            print(f"    {ln[:200]}")


if __name__ == "__main__":
    main(sys.argv[1])
