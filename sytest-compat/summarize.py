#!/usr/bin/env python3
"""Summarise a SyTest run (run.sh's results directory) as a table by area.

SyTest's TAP (results.tap) holds each test's number, name and outcome; its
standard error (sytest.log) says which file each numbered test came from,
which gives the area (tests/31sync/... -> 31sync).

    summarize.py RESULTS_DIR                       table (text)
    summarize.py RESULTS_DIR --markdown            table (Markdown)
    summarize.py RESULTS_DIR --passing             names of passing tests, one a line
    summarize.py RESULTS_DIR --failing             failing tests with their area
    summarize.py RESULTS_DIR --check-whitelist F   also exit 1 unless every test in F passed
"""

import argparse
import re
import sys
from collections import OrderedDict
from pathlib import Path

FILE_RE = re.compile(r"^(tests/\S+\.pl):$")
TEST_RE = re.compile(r"^\s+Test (\d+) (.*?)\.\.\. ")
TAP_RE = re.compile(r"^(not ok|ok) (\d+) (?:\(expected fail\) )?(.*?)(?: # (TODO|skip)\b.*)?$")
MULTI_SUFFIX = re.compile(r" \(\d+ subtests\)$")
FILES = {}  # test number -> SyTest file, filled by load()


def area_of(path):
    parts = path.split("/")
    if len(parts) >= 3:
        return parts[1]
    return Path(parts[-1]).stem


def load(results):
    """Returns [(num, area, name, outcome)], outcome in pass/fail/skip."""
    origin = {}
    log = results / "sytest.log"
    if log.exists():
        path = "unknown"
        for line in log.read_text(errors="replace").splitlines():
            m = FILE_RE.match(line)
            if m:
                path = m.group(1)
                continue
            m = TEST_RE.match(line)
            if m:
                origin[int(m.group(1))] = (path, m.group(2))
    tests = OrderedDict()
    tap = results / "results.tap"
    for line in tap.read_text(errors="replace").splitlines():
        m = TAP_RE.match(line)
        if not m:
            continue
        status, num, name, directive = m.group(1), int(m.group(2)), m.group(3), m.group(4)
        name = MULTI_SUFFIX.sub("", name)
        path, logged_name = origin.get(num, ("unknown", name))
        FILES[num] = path
        area = area_of(path) if path != "unknown" else path
        if directive == "skip":
            outcome = "skip"
        elif status == "ok":
            outcome = "pass"
        else:
            outcome = "fail"
        tests[num] = (num, area, logged_name or name, outcome)
    return list(tests.values())


def table(tests):
    areas = OrderedDict()
    for _, area, _, outcome in sorted(tests, key=lambda t: t[1]):
        counts = areas.setdefault(area, {"pass": 0, "fail": 0, "skip": 0})
        counts[outcome] += 1
    total = {"pass": 0, "fail": 0, "skip": 0}
    rows = []
    for area, c in areas.items():
        for k in total:
            total[k] += c[k]
        rows.append((area, c))
    rows.append(("total", total))
    return rows


def pct(c):
    n = c["pass"] + c["fail"]
    return f"{100 * c['pass'] / n:.0f}%" if n else "-"


def print_text(rows):
    print(f"{'area':<22} {'pass':>5} {'fail':>5} {'skip':>5}  {'passing':>7}")
    for area, c in rows:
        print(f"{area:<22} {c['pass']:>5} {c['fail']:>5} {c['skip']:>5}  {pct(c):>7}")


def print_markdown(rows):
    print("| area | pass | fail | skip | passing |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for area, c in rows:
        label = f"**{area}**" if area == "total" else area
        print(f"| {label} | {c['pass']} | {c['fail']} | {c['skip']} | {pct(c)} |")


def read_list(path):
    names = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()  # SyTest's own parsing
        if line:
            names.append(line)
    return names


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results", type=Path)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--passing", action="store_true")
    ap.add_argument("--failing", action="store_true")
    ap.add_argument("--check-whitelist", metavar="FILE")
    args = ap.parse_args()

    tests = load(args.results)
    if args.passing:
        # Grouped under "# <file>" comments, which run.sh reads to pick files.
        seen = {name for _, _, name, outcome in tests if outcome != "pass"}
        current = None
        for num, _, name, outcome in tests:
            if outcome == "pass" and name not in seen and "#" not in name:
                seen.add(name)
                if FILES.get(num) != current:
                    current = FILES.get(num)
                    print(f"# {current}")
                print(name)
        return 0
    if args.failing:
        for num, area, name, outcome in tests:
            if outcome == "fail":
                print(f"{area}\t{num}\t{name}")
        return 0

    (print_markdown if args.markdown else print_text)(table(tests))

    if args.check_whitelist:
        passed = {name for _, _, name, outcome in tests if outcome == "pass"}
        passed -= {name for _, _, name, outcome in tests if outcome != "pass"}
        missing = [n for n in read_list(args.check_whitelist) if n not in passed]
        if missing:
            print(f"\n{len(missing)} whitelisted test(s) did not pass:", file=sys.stderr)
            for n in missing:
                print(f"  {n}", file=sys.stderr)
            return 1
        print(f"\nall {len(read_list(args.check_whitelist))} whitelisted tests passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
