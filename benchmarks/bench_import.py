"""How long ``import dehub``, ``import dehub.cli`` and ``dehub --help`` take, and how many
modules ``import dehub`` loads, for one or more source trees compared round by round.

    python benchmarks/bench_import.py [--rounds 5] LABEL=SRC_DIR [LABEL=SRC_DIR ...]

Every measurement is a fresh interpreter (``python -X importtime``); the trees are
alternated inside each round so a busy machine slows them alike. Printed per tree:
the median over rounds of the cumulative ``-X importtime`` of the named module (in ms;
numpy's own import included, and once more with numpy imported first), the wall time of
a whole ``dehub --help`` process, the number of modules ``import dehub`` adds to
``sys.modules`` (and how many of them are dehub's), and ``import dehub.cli`` too; with two or more trees, the median
of the per-round ratios to the first tree. The CPU model and load averages are recorded
beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: name -> (code run in a fresh interpreter, the module whose cumulative import time counts)
CASES = {
    "import dehub": ("import dehub", "dehub"),
    "import dehub (numpy first)": ("import numpy; import dehub", "dehub"),
    "import dehub.cli": ("import dehub.cli", "dehub.cli"),
}
HELP = "import sys; from dehub.cli import main; sys.exit(main(['--help']))"
COUNT = (
    "import sys, json; before = set(sys.modules); import {module}; "
    "new = set(sys.modules) - before; "
    "print(json.dumps([len(new), sum(m.split('.')[0] == 'dehub' for m in new)]))"
)


def _cumulative_ms(stderr: str, module: str) -> float:
    """The cumulative microseconds ``-X importtime`` gives ``module``, in ms."""
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line[len("import time:") :].split("|")
        if name.strip() == module and cumulative.strip().isdigit():
            return int(cumulative) / 1000
    raise RuntimeError(f"-X importtime printed no line for {module!r}:\n{stderr[-2000:]}")


def _env(src: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(src)
    return env


def measure(src: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, (code, module) in CASES.items():
        run = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code],
            env=_env(src),
            capture_output=True,
            text=True,
            check=True,
        )
        out[name] = _cumulative_ms(run.stderr, module)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", HELP], env=_env(src), capture_output=True, check=True)
    out["dehub --help (whole process)"] = (time.perf_counter() - t0) * 1000
    return out


def count_modules(src: Path, module: str) -> tuple[int, int]:
    """How many modules ``import module`` adds to ``sys.modules``, and how many are dehub's."""
    run = subprocess.run(
        [sys.executable, "-c", COUNT.format(module=module)],
        env=_env(src),
        capture_output=True,
        text=True,
        check=True,
    )
    total, own = json.loads(run.stdout)
    return int(total), int(own)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", metavar="LABEL=SRC_DIR")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    trees: dict[str, Path] = {}
    for item in args.trees:
        label, sep, path = item.partition("=")
        if not sep or not Path(path, "dehub", "__init__.py").is_file():
            parser.error(f"expected LABEL=SRC_DIR with SRC_DIR/dehub/__init__.py; received {item!r}")
        trees[label] = Path(path).resolve()
    print(f"cpu: {_cpu_model()}; python {platform.python_version()}; load before: {os.getloadavg()}")
    rounds: dict[str, list[dict[str, float]]] = {label: [] for label in trees}
    t_start = time.perf_counter()
    for r in range(args.rounds):
        order = list(trees) if r % 2 == 0 else list(reversed(trees))
        for label in order:
            rounds[label].append(measure(trees[label]))
        done = r + 1
        rate = (time.perf_counter() - t_start) / done
        print(
            f"  round {done}/{args.rounds} ({rate:.1f} s/round, ETA {rate * (args.rounds - done):.0f} s)",
            file=sys.stderr,
        )
    print(f"load after: {os.getloadavg()}; {args.rounds} rounds, fresh interpreter per figure")
    first = next(iter(trees))
    for label, src in trees.items():
        counts = {m: count_modules(src, m) for m in ("dehub", "dehub.cli")}
        print(
            f"\n{label} ({src}): "
            + "; ".join(
                f"import {m} adds {total} modules ({own} of dehub)" for m, (total, own) in counts.items()
            )
        )
        for case in rounds[label][0]:
            values = [x[case] for x in rounds[label]]
            line = f"  {case:<30} median {statistics.median(values):8.1f} ms (min {min(values):.1f}, max {max(values):.1f})"
            if label != first:
                ratios = [x[case] / y[case] for x, y in zip(rounds[label], rounds[first])]
                line += f"; per-round ratio to {first}: median {statistics.median(ratios):.2f}"
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
