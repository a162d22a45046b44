#!/usr/bin/env python3
"""Compare two runs of the test suite from their JUnit XML files (pytest --junitxml): the tests
both runs have, old time against new, and the time of the tests only one run has.

    PYTEST_ADDOPTS=--junitxml=/tmp/old.xml make test     # in a checkout of the old commit
    PYTEST_ADDOPTS=--junitxml=/tmp/new.xml make test     # in a checkout of the new one
    python3 tools/compare_test_times.py /tmp/old.xml /tmp/new.xml

Tests move between files as the code is reorganised, so a test is matched by its function name
with its parametrization (`test_x[a-1]`), and by its file name and class only where that name is
not unique on both sides. A test's time is JUnit's: setup + call + teardown, so a module-scoped
fixture's cost (a VM boot, a daemon start) is charged to the first test that uses it.
Prints Markdown; stdlib only.
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Case:
    file: str  # tests/web/test_api.py (from JUnit's classname)
    cls: str  # the test class, "" for a module-level function
    name: str  # the function with its parametrization: test_x[a-1]
    seconds: float
    outcome: str  # passed, failed, error, skipped

    @property
    def label(self) -> str:
        return f"{self.file}::{self.cls + '::' if self.cls else ''}{self.name}"


def read_junit(path: Path) -> tuple[list[Case], float]:
    """The test cases of one JUnit file and the run's own total time (pytest's, in seconds)."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    cases = []
    for element in root.iter("testcase"):
        file, cls = split_classname(element.get("classname", ""))
        outcome = "passed"
        for child in element:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                if outcome != "skipped":
                    break  # an error in teardown after a failure: the failure says more
        cases.append(Case(file, cls, element.get("name", ""), float(element.get("time") or 0), outcome))
    return cases, sum(float(suite.get("time") or 0) for suite in suites)


def split_classname(classname: str) -> tuple[str, str]:
    """pytest's classname 'tests.web.test_api.TestLogin' -> ('tests/web/test_api.py', 'TestLogin')."""
    parts = classname.split(".")
    cls = ""
    if len(parts) > 1 and parts[-1][:1].isupper():  # modules are lower case, classes are not
        cls = parts.pop()
    return "/".join(parts) + ".py", cls


def match(old: list[Case], new: list[Case]) -> tuple[list[tuple[Case, Case]], list[Case], list[Case]]:
    """(pairs of the same test in both runs, old-only tests, new-only tests). A test is the same
    when its name with parametrization is unique on both sides; where a name is used more than
    once on a side, by file name (not folder: files moved) and class and name; anything still
    ambiguous stays unmatched."""
    pairs: list[tuple[Case, Case]] = []
    old_left, new_left = list(old), list(new)
    for key in (lambda c: c.name, lambda c: (Path(c.file).name, c.cls, c.name)):
        old_by, new_by = defaultdict(list), defaultdict(list)
        for case in old_left:
            old_by[key(case)].append(case)
        for case in new_left:
            new_by[key(case)].append(case)
        taken = set()
        for k, olds in old_by.items():
            news = new_by.get(k, [])
            if len(olds) == 1 and len(news) == 1:
                pairs.append((olds[0], news[0]))
                taken.add(k)
        old_left = [c for c in old_left if key(c) not in taken]
        new_left = [c for c in new_left if key(c) not in taken]
    return pairs, old_left, new_left


def counts(cases: list[Case]) -> str:
    tally: dict[str, int] = defaultdict(int)
    for case in cases:
        tally[case.outcome] += 1
    return ", ".join(f"{tally[o]} {o}" for o in ("passed", "skipped", "failed", "error") if tally[o])


def by_file(cases: list[Case]) -> list[tuple[str, int, float]]:
    """(file, tests, seconds), slowest first."""
    groups: dict[str, list[Case]] = defaultdict(list)
    for case in cases:
        groups[case.file].append(case)
    rows = [(file, len(cs), sum(c.seconds for c in cs)) for file, cs in groups.items()]
    return sorted(rows, key=lambda row: -row[2])


def by_new_file(pairs: list[tuple[Case, Case]]) -> dict[str, list[tuple[Case, Case]]]:
    groups: dict[str, list[tuple[Case, Case]]] = defaultdict(list)
    for o, n in pairs:
        groups[n.file].append((o, n))
    return groups


def summed(what: str, pairs: list[tuple[Case, Case]]) -> str:
    old = sum(o.seconds for o, _ in pairs)
    new = sum(n.seconds for _, n in pairs)
    return f"{what}: old {old:.1f} s, new {new:.1f} s, new/old {new / old if old else float('nan'):.3f}."


def report(old_path: Path, new_path: Path, top: int = 15) -> str:
    old, old_total = read_junit(old_path)
    new, new_total = read_junit(new_path)
    pairs, old_only, new_only = match(old, new)
    both_ran = [(o, n) for o, n in pairs if o.outcome != "skipped" and n.outcome != "skipped"]
    both_passed = [(o, n) for o, n in pairs if o.outcome == n.outcome == "passed"]
    out = [f"# Test times: {old_path.name} (old) vs {new_path.name} (new)", "",
           "| | old | new |", "|---|---|---|",
           f"| tests | {len(old)} ({counts(old)}) | {len(new)} ({counts(new)}) |",
           f"| pytest's total time | {old_total:.0f} s | {new_total:.0f} s |",
           f"| sum of the tests' times | {sum(c.seconds for c in old):.0f} s | "
           f"{sum(c.seconds for c in new):.0f} s |", "",
           f"## Matched tests: {len(pairs)} in both runs, {len(both_ran)} ran (not skipped) in both",
           "",
           summed("Their summed time", both_ran), "",
           summed(f"Of those, the {len(both_passed)} that passed in both (a failure may end a "
                  "test early or make it wait out a timeout)", both_passed), ""]
    changed = [(o, n) for o, n in pairs if o.outcome != n.outcome]
    if changed:
        out += ["Outcome changed: " + "; ".join(f"{n.name} {o.outcome} -> {n.outcome}" for o, n in changed), ""]
    out += ["Matched tests that ran in both, by file (new place; a module fixture's cost is in its "
            "first test, so a file's sum is steadier than a test's):", "",
            "| file | tests | old s | new s | new - old |", "|---|---|---|---|---|"]
    for file, group in sorted(by_new_file(both_ran).items(),
                              key=lambda item: -abs(sum(n.seconds - o.seconds for o, n in item[1]))):
        old_s, new_s = sum(o.seconds for o, _ in group), sum(n.seconds for _, n in group)
        out.append(f"| {file} | {len(group)} | {old_s:.1f} | {new_s:.1f} | {new_s - old_s:+.1f} |")
    out += ["", f"Largest changes (top {top} by |new - old|):", "",
            "| test (new place) | old s | new s | new - old |", "|---|---|---|---|"]
    for o, n in sorted(both_ran, key=lambda p: -abs(p[1].seconds - p[0].seconds))[:top]:
        out.append(f"| {n.label} | {o.seconds:.1f} | {n.seconds:.1f} | {n.seconds - o.seconds:+.1f} |")
    out += ["", f"## Only in the new run: {len(new_only)} tests, "
            f"{sum(c.seconds for c in new_only):.0f} s ({counts(new_only)})", "",
            "| file | tests | seconds |", "|---|---|---|"]
    out += [f"| {file} | {n} | {s:.1f} |" for file, n, s in by_file(new_only)]
    out += ["", f"## Only in the old run (removed, renamed or ambiguous): {len(old_only)} tests, "
            f"{sum(c.seconds for c in old_only):.0f} s", ""]
    out += [f"- {c.label} ({c.seconds:.1f} s, {c.outcome})" for c in old_only]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path, help="JUnit XML of the old run")
    parser.add_argument("new", type=Path, help="JUnit XML of the new run")
    parser.add_argument("--top", type=int, default=15, help="how many of the largest changes to list")
    args = parser.parse_args(argv)
    sys.stdout.write(report(args.old, args.new, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
