"""What a build container of the runc stand-in engine runs (not a scenario).

    python3 -S build.py MODE [ARG...]

Its first instruction prints the limits in force, from its own /sys/fs/cgroup (the runc
container has a cgroup namespace rooted at its build group), and the monotonic clock:
    limits memory.max=268435456 pids.max=max cpu.max=max 100000 oom.group=1 oom_score_adj=0 t_ns=123
then MODE:
    exit            nothing more
    hog MIB         allocate and touch MIB MiB, then sleep 600 s (an OOM kill is expected)
    spin S MIB      keep MIB MiB resident and burn one CPU for S seconds
    forks N S       fork N children that sleep S seconds; print how many forks the kernel refused
"""

import os
import sys
import time

t_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def read(name):
    try:
        with open("/sys/fs/cgroup/" + name) as f:
            return f.read().strip()
    except OSError as error:
        return "unreadable(" + error.strerror.replace(" ", "_") + ")"


with open("/proc/self/oom_score_adj") as f:
    adj = f.read().strip()
cpu_max = read("cpu.max").replace(" ", "_")
print(f"limits memory.max={read('memory.max')} pids.max={read('pids.max')} cpu.max={cpu_max} "
      f"oom.group={read('memory.oom.group')} oom_score_adj={adj} t_ns={t_ns}", flush=True)

mode, args = sys.argv[1], sys.argv[2:]
if mode == "hog":
    held = b"\1" * (int(args[0]) << 20)
    print(f"hog: survived with {len(held) >> 20} MiB", flush=True)
    time.sleep(600)
elif mode == "spin":
    held = b"\1" * (int(args[1]) << 20)
    print(f"spin: holding {len(held) >> 20} MiB", flush=True)
    deadline = time.monotonic() + float(args[0])
    while time.monotonic() < deadline:
        sum(range(10000))
elif mode == "forks":
    children, refused = [], 0
    for _ in range(int(args[0])):
        try:
            pid = os.fork()
        except OSError:
            refused += 1
            continue
        if pid == 0:
            time.sleep(float(args[1]))
            os._exit(0)
        children.append(pid)
    print(f"forks: {len(children)} forked, {refused} refused", flush=True)
    for pid in children:
        os.waitpid(pid, 0)
elif mode != "exit":
    sys.exit("build.py: unknown mode " + mode)
