# SPDX-License-Identifier: MIT
"""snapsync.yaml(5) names every key of config.yaml.example (= `snapsync config --template`) in
its section, in order: each section as .SS, each key (or parent.key in a nested section) as .B.
Parsed here independently of man/yaml-man.awk, so a key shape the generator skips fails.
    python3 tests/package/check_yaml_man.py config.yaml.example build/snapsync.yaml.5"""

import re
import sys


def expected(example):
    out, parent = [], None
    for line in example.splitlines():
        m = re.match(r"^([A-Za-z0-9_-]+):", line)
        if m:
            out.append(("SS", m.group(1)))
            continue
        m = re.match(r"^  ([A-Za-z0-9_-]+):\s*$", line)
        if m:
            parent = m.group(1)
            out.append(("B", parent))
            continue
        m = re.match(r"^    ([A-Za-z0-9_-]+):", line)
        if m:
            out.append(("B", f"{parent}.{m.group(1)}"))
            continue
        m = re.match(r"^  ([A-Za-z0-9_-]+):", line)
        if m:
            out.append(("B", m.group(1)))
    return out


def documented(page):
    lines = page.splitlines()
    keys = lines[lines.index(".SH KEYS") + 1:]
    out = []
    for line in keys:
        if line.startswith(".SH "):
            break
        m = re.match(r"^\.(SS|B) (.*)$", line)
        if m:
            out.append((m.group(1), m.group(2).replace("\\-", "-")))
    return out


def main(example_path, page_path):
    with open(example_path) as f:
        want = expected(f.read())
    with open(page_path) as f:
        have = documented(f.read())
    if not want:
        print(f"no keys found in {example_path}")
        return 1
    for i, (w, h) in enumerate(zip(want + [None] * len(have), have + [None] * len(want))):
        if w != h:
            print(f"{page_path}: entry {i + 1} is {h}, {example_path} has {w}")
            return 1
    print(f"check_yaml_man: {sum(1 for k, _ in want if k == 'SS')} sections, "
          f"{sum(1 for k, _ in want if k == 'B')} keys documented")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
