"""List (or rewrite) plain ``raise ValueError(``/``raise TypeError(`` in ``src/dehub``.

User-input errors are ``dehub._errors.InputError`` / ``InputTypeError`` so the CLI can
tell a user's mistake (one line, exit 2) from a bug in dehub (traceback, exit 70);
``tests/test_cli_errors.py`` counts the plain raises that remain. After a merge brings
new plain raises for user input, ``--rewrite FILE...`` turns them into InputError /
InputTypeError and adds the import (then ``ruff check --fix`` and ``ruff format``).
Internal checks (firing means a bug) stay plain: review before rewriting.

    python scripts/user_raises.py                      # count per file
    python scripts/user_raises.py --rewrite src/dehub/evaluation/report.py
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "dehub"
PLAIN = re.compile(r"\braise (ValueError|TypeError)\(")
NEW = {"ValueError": "InputError", "TypeError": "InputTypeError"}


def rewrite(path: Path) -> int:
    text = path.read_text(encoding="utf-8")
    used = {NEW[m.group(1)] for m in PLAIN.finditer(text)}
    if not used:
        return 0
    n = len(PLAIN.findall(text))
    text = PLAIN.sub(lambda m: f"raise {NEW[m.group(1)]}(", text)
    module = "." * len(path.resolve().relative_to(SRC).parts) + "_errors"
    found = re.search(rf"^from {re.escape(module)} import (.+)$", text, re.M)
    if found:
        names = sorted({n.strip() for n in found.group(1).split(",")} | used)
        text = text[: found.start()] + f"from {module} import {', '.join(names)}" + text[found.end() :]
    else:
        imports = list(re.finditer(r"^(from \S+ import .+|import \S+)$", text, re.M))
        relative = [m for m in imports if m.group(0).startswith("from .")]
        at = relative[0].start() if relative else imports[-1].end() + 1
        text = text[:at] + f"from {module} import {', '.join(sorted(used))}\n" + text[at:]
    path.write_text(text, encoding="utf-8")
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rewrite", nargs="+", type=Path, metavar="FILE")
    args = ap.parse_args()
    if args.rewrite:
        for path in args.rewrite:
            print(f"{path}: {rewrite(path)} raises rewritten")
        return
    for path in sorted(SRC.rglob("*.py")):
        n = len(PLAIN.findall(path.read_text(encoding="utf-8")))
        if n:
            print(f"{n:4d} {path.relative_to(SRC).as_posix()}")


if __name__ == "__main__":
    main()
