"""Run a command with a CPU-burning neighbour process on every core (``make test-busy``).

    python scripts/busy.py [--burners N] -- COMMAND...

Starts N (default: every core) busy-looping processes at normal priority, runs COMMAND,
stops the burners it started (by their pids) whatever happens, and prints the CPU model,
the load averages before and after, the wall time and COMMAND's exit status, which it
returns. The suite must pass like this: no test may depend on the machine's speed.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import time

# busy-loops until its parent (this script) is gone, so no burner outlives a killed run
_BURN = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    pass\n"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--burners", type=int, default=os.cpu_count() or 1, help="busy processes (default: every core)"
    )
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after --")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("expected a command after --")
    burners = [
        subprocess.Popen([sys.executable, "-c", _BURN], stdin=subprocess.DEVNULL)
        for _ in range(max(args.burners, 0))
    ]
    print(
        f"busy.py: {len(burners)} CPU burners on {os.cpu_count()} cores ({_cpu_model()}); "
        f"load average before {os.getloadavg()}",
        flush=True,
    )
    start = time.monotonic()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the burners on SIGTERM too
    try:
        rc = subprocess.call(command)
    finally:
        for b in burners:
            b.kill()
        for b in burners:
            b.wait()
    print(
        f"busy.py: exit status {rc} after {time.monotonic() - start:.0f} s; load average at the end "
        f"{os.getloadavg()}",
        flush=True,
    )
    return rc


if __name__ == "__main__":
    sys.exit(main())
