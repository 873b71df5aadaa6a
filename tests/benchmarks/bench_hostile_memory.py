"""Memory of the client over rounds of the hostile-server matrix (tests/hostile.py).

Run by hand (not part of the test suite)::

    python tests/benchmarks/bench_hostile_memory.py [--rounds 5] [--cases 500] [--timeout 1]
        [--parallel 8] [--kinds flood,huge-line] [--mailer-every 5] [--malloc-trim] [--tracemalloc]
    MALLOC_ARENA_MAX=2 python tests/benchmarks/bench_hostile_memory.py ...

Each round plays cases 0..N-1 of the seeded matrix (every stage x every
misbehaviour, slow drips, the 1 MB line without newline and the 100,000
continuation lines included) against ``syncsmtp.send()`` (every
``--mailer-every``-th case through a ``Mailer``), ``--parallel`` at a time, in
this one process. After each round it prints:

- VmRSS (and VmHWM) from /proc/self/status, before and after ``gc.collect()``,
  and with ``--malloc-trim`` after glibc's ``malloc_trim(0)`` too;
- glibc's own account (``mallinfo2``): bytes in use by malloc (uordblks),
  free bytes it keeps in its arenas (fordblks), mmapped bytes (hblkhd), and
  the number of arenas; RSS that grows while "in use" stays flat is memory
  malloc keeps (fragmentation, per-thread arenas), not live objects;
- ``sys.getallocatedblocks()`` and the live Python objects by type that grew
  since the round before (``gc.get_objects()``);
- with ``--tracemalloc``, the top allocation sites that grew between rounds
  (tracemalloc's own bookkeeping then inflates RSS, and obmalloc's figures
  are not available: compare its "traced now" between rounds, not the RSS).

- Python's own allocator (``sys._debugmallocstats``): its 1 MiB arenas and
  the bytes in use in them; and /proc/self/smaps summed: the main heap, other
  anonymous memory (thread arenas and stacks, obmalloc arenas, big buffers).

``--kinds`` / ``--stages`` play only some misbehaviours (see ``hostile.KINDS``),
to find which one the memory goes with. ``--server-process`` runs the hostile
servers in a child process, so that only the client's memory is measured
(by default they run in threads of this process, as in the test).
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import ctypes.util
import gc
import os
import sys
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hostile import (
    KINDS,
    STAGES,
    HostileServer,
    make_case,
    make_message,
    policy_for,
    run_mailer_case,
    run_send_case,
)

import syncsmtp


def status() -> dict[str, int]:
    """VmRSS, VmHWM, ... from /proc/self/status, in KiB."""
    found = {}
    with open("/proc/self/status") as file:
        for line in file:
            key, _, value = line.partition(":")
            if key.startswith("Vm") or key == "Threads":
                found[key] = int(value.split()[0])
    return found


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
        "keepcost")]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def mallinfo() -> dict[str, int] | None:
    """glibc's mallinfo2(), or None where there is none (musl, glibc < 2.33)."""
    function = getattr(_libc, "mallinfo2", None)
    if function is None:
        return None
    function.restype = _MallInfo2
    info = function()
    return {name: int(getattr(info, name)) for name, _ in _MallInfo2._fields_}


def malloc_trim() -> None:
    _libc.malloc_trim(0)


def arena_count() -> int | None:
    """How many malloc arenas glibc has (from malloc_info's XML)."""
    import tempfile

    opened = getattr(_libc, "fdopen", None)
    info = getattr(_libc, "malloc_info", None)
    if opened is None or info is None:
        return None
    with tempfile.TemporaryFile() as file:
        opened.restype = ctypes.c_void_p
        stream = opened(os.dup(file.fileno()), b"w")
        info(0, ctypes.c_void_p(stream))
        _libc.fclose(ctypes.c_void_p(stream))
        file.seek(0)
        return file.read().count(b"<heap nr=")


def obmalloc() -> dict[str, int]:
    """Python's allocator: arenas now, and bytes in allocated blocks (sys._debugmallocstats)."""
    import tempfile

    wanted = {"# arenas allocated current": "arenas", "# arenas highwater mark": "arenas_peak",
              "# bytes in allocated blocks": "used", "# bytes in available blocks": "free"}
    found: dict[str, int] = {}
    with tempfile.TemporaryFile(mode="w+") as file:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(file.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        file.seek(0)
        for line in file:
            key, _, value = line.partition("=")
            name = wanted.get(key.strip())
            if name is not None and name not in found:
                found[name] = int(value.strip().replace(",", ""))
    return found


def smaps() -> dict[str, int]:
    """Resident KiB by kind of mapping: the main heap, other anonymous memory, files."""
    found = {"heap": 0, "anon": 0, "file": 0}
    kind = "anon"
    with open("/proc/self/smaps") as file:
        for line in file:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):
                parts = line.split()
                name = parts[5] if len(parts) > 5 else ""
                kind = "heap" if name == "[heap]" else "file" if name.startswith("/") else "anon"
            elif first == "Rss:":
                found[kind] += int(line.split()[1])
    return found


def mib(kib: int) -> str:
    return f"{kib / 1024:7.1f} MiB"


def type_counts() -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for obj in gc.get_objects():
        counts[type(obj).__qualname__] += 1
    return counts


def _serve_cases(connection: Any) -> None:
    """The child of ``--server-process``: starts and stops hostile servers on request."""
    servers: dict[int, HostileServer] = {}
    while True:
        request = connection.recv()
        if request[0] == "start":
            _, seed, index, mailer, lifetime = request
            server = HostileServer(make_case(seed, index, mailer=mailer).script, lifetime=lifetime).start()
            servers[server.port] = server
            connection.send(server.port)
        elif request[0] == "stop":
            servers.pop(request[1]).stop()
            connection.send(None)
        else:
            for server in servers.values():
                server.stop()
            connection.send(None)
            return


class RemoteServers:
    """Hostile servers in a child process (one pipe, shared under a lock)."""

    def __init__(self) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._process = context.Process(target=_serve_cases, args=(child,), daemon=True)
        self._process.start()
        self._lock = threading.Lock()

    def call(self, *request: Any) -> Any:
        with self._lock:
            self._pipe.send(request)
            return self._pipe.recv()

    def close(self) -> None:
        self.call("exit")
        self._process.join(10)


def _remote_case(remote: RemoteServers, case: Any, timeout: float, mailer: bool) -> list[str]:
    port = remote.call("start", case.seed, case.index, mailer, timeout * 3 + 20)
    names = []
    try:
        policy = policy_for(port)
        if mailer:
            with syncsmtp.Mailer(policy) as sender:
                for number in range(1, 4):
                    try:
                        sender.send(make_message(number, case.recipients), timeout=timeout)
                        names.append("SendResult")
                    except Exception as exc:
                        names.append(type(exc).__name__)
        else:
            try:
                syncsmtp.send(make_message(1, case.recipients), policy, timeout=timeout)
                names.append("SendResult")
            except Exception as exc:
                names.append(type(exc).__name__)
    finally:
        remote.call("stop", port)
    return names


def play_round(cases: list[Any], timeout: float, parallel: int, mailer_every: int,
               remote: RemoteServers | None) -> collections.Counter[str]:
    outcomes: collections.Counter[str] = collections.Counter()

    def play(item: tuple[int, Any]) -> list[str]:
        number, case = item
        mailer = bool(mailer_every and number % mailer_every == 0)
        if remote is not None:
            return _remote_case(remote, make_case(case.seed, case.index, mailer=mailer), timeout, mailer)
        run = run_mailer_case(case, timeout) if mailer else run_send_case(case, timeout)
        return [type(outcome.value).__name__ for outcome in run.outcomes]

    with ThreadPoolExecutor(parallel, thread_name_prefix="bench-case") as pool:
        for names in pool.map(play, enumerate(cases)):
            outcomes.update(names)
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cases", type=int, default=500, help="cases per round (default 500)")
    parser.add_argument("--seed", default="memory")
    parser.add_argument("--timeout", type=float, default=1.0, help="deadline of each send (default 1 s)")
    parser.add_argument("--parallel", type=int, default=8, help="cases played at once (default 8)")
    parser.add_argument("--kinds", default="", help=f"comma-separated subset of: {', '.join(KINDS)}")
    parser.add_argument("--stages", default="", help=f"comma-separated subset of: {', '.join(STAGES)}")
    parser.add_argument("--mailer-every", type=int, default=5,
                        help="every Nth case goes through a Mailer (0: never; default 5)")
    parser.add_argument("--malloc-trim", action="store_true", help="also print RSS after malloc_trim(0)")
    parser.add_argument("--tracemalloc", action="store_true", help="top growing allocation sites (slow)")
    parser.add_argument("--server-process", action="store_true",
                        help="run the hostile servers in a child process: measure the client alone")
    args = parser.parse_args()

    kinds = set(filter(None, args.kinds.split(","))) or set(KINDS)
    stages = set(filter(None, args.stages.split(","))) or set(STAGES)
    unknown = (kinds - set(KINDS)) | (stages - set(STAGES))
    if unknown:
        parser.error(f"unknown kinds or stages: {sorted(unknown)}")
    cases = []
    index = 0
    while len(cases) < args.cases and index < args.cases * 1000:
        case = make_case(args.seed, index)
        if case.kind in kinds and case.stage in stages:
            cases.append(case)
        index += 1
    per_kind = collections.Counter(case.kind for case in cases)
    print(f"syncsmtp {syncsmtp.__version__} from {Path(syncsmtp.__file__).parent}; "
          f"Python {sys.version.split()[0]}; "
          f"MALLOC_ARENA_MAX={os.environ.get('MALLOC_ARENA_MAX', '(unset)')}; "
          f"PYTHONMALLOC={os.environ.get('PYTHONMALLOC', '(unset)')}")
    print(f"{len(cases)} cases per round, timeout {args.timeout:g} s, {args.parallel} at a time; per kind: "
          + ", ".join(f"{kind} {n}" for kind, n in sorted(per_kind.items())))
    remote = RemoteServers() if args.server_process else None
    print(f"servers: {'in a child process' if remote else 'threads of this process'}; "
          f"start: RSS {mib(status()['VmRSS'])}")
    if args.tracemalloc:
        tracemalloc.start(5)
    previous_types = type_counts()
    previous_snapshot = tracemalloc.take_snapshot() if args.tracemalloc else None
    for number in range(1, args.rounds + 1):
        started = time.monotonic()
        outcomes = play_round(cases, args.timeout, args.parallel, args.mailer_every, remote)
        took = time.monotonic() - started
        before_gc = status()
        gc.collect()
        after_gc = status()
        line = (f"round {number}: {took:5.1f} s  RSS {mib(before_gc['VmRSS'])}, after gc.collect() "
                f"{mib(after_gc['VmRSS'])} (peak {mib(after_gc['VmHWM'])})")
        if args.malloc_trim:
            malloc_trim()
            line += f", after malloc_trim {mib(status()['VmRSS'])}"
        print(line)
        info = mallinfo()
        if info is not None:
            print(f"    malloc: in use {info['uordblks'] / 2**20:.1f} MiB, free kept in arenas "
                  f"{info['fordblks'] / 2**20:.1f} MiB, mmapped {info['hblkhd'] / 2**20:.1f} MiB, "
                  f"heap {info['arena'] / 2**20:.1f} MiB, arenas {arena_count()}")
        py = obmalloc()
        maps = smaps()
        print(f"    obmalloc: {py.get('arenas')} arenas of 1 MiB (peak {py.get('arenas_peak')}), "
              f"{py.get('used', 0) / 2**20:.1f} MiB in allocated blocks, "
              f"{py.get('free', 0) / 2**20:.1f} MiB free in them; smaps RSS: heap {mib(maps['heap'])}, "
              f"other anonymous {mib(maps['anon'])}, "
              f"files {mib(maps['file'])}")
        print(f"    python: {sys.getallocatedblocks()} allocated blocks, {len(gc.get_objects())} gc objects, "
              f"{threading.active_count()} threads, {len(os.listdir('/proc/self/fd'))} fds")
        print("    outcomes: " + ", ".join(f"{name} {n}" for name, n in outcomes.most_common()))
        types = type_counts()
        grown = [(name, types[name] - previous_types.get(name, 0)) for name in types]
        grown = sorted((item for item in grown if item[1] > 0), key=lambda item: -item[1])[:12]
        print("    live objects grown: " + (", ".join(f"{name} +{n}" for name, n in grown) or "none"))
        previous_types = types
        if args.tracemalloc and previous_snapshot is not None:
            snapshot = tracemalloc.take_snapshot()
            stats = snapshot.compare_to(previous_snapshot, "lineno")[:8]
            for stat in stats:
                print(f"    tracemalloc: {stat}")
            previous_snapshot = snapshot
            current, peak = tracemalloc.get_traced_memory()
            print(f"    tracemalloc: traced now {current / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB")
        sys.stdout.flush()
    if remote is not None:
        remote.close()


if __name__ == "__main__":
    main()
