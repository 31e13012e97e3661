"""Tiny launcher that runs one command and reports its rusage as JSON.

Why not wait4 the tool directly from the bench: Linux carries the parent's resident set into a forked
child and records it in the child's ru_maxrss at exec, so every tool spawned by the (large) bench process
would report the bench's own peak RSS. This launcher is started with `python -I -S` (a few MB), forks the
tool from there and waits for it with os.wait4, so ru_maxrss is the tool's own peak and ru_utime/ru_stime
cover the tool plus every descendant it reaped, and nothing of the launcher.

Usage: python -I -S bench/spawn.py REPORT.json -- CMD [ARGS...]
Exit code: the tool's exit code (128+N when killed by signal N).
"""

import json
import os
import sys
import time


def main() -> int:
    report, sep, *cmd = sys.argv[1:]
    if sep != "--" or not cmd:
        print(__doc__, file=sys.stderr)
        return 2
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child: become the tool
        try:
            os.execvp(cmd[0], cmd)
        except OSError as exc:
            print(f"spawn: cannot exec {cmd[0]}: {exc}", file=sys.stderr)
        os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    code = 128 - code if code < 0 else code
    with open(report, "w") as fh:
        json.dump(
            {
                "wall_s": wall,
                "user_s": usage.ru_utime,
                "sys_s": usage.ru_stime,
                "maxrss_kb": usage.ru_maxrss,
                "returncode": code,
            },
            fh,
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
