"""A warm benchmark worker: one workload under one configuration, driven over stdin/stdout.

Started by ``_harness.Worker`` with a JSON spec as its only argument. Protocol, one JSON object a
line: the worker answers ``{"ready": ...}`` after setup and warm-up; ``{"cmd": "round", "n": N}``
runs N operations with the garbage collector disabled and answers ``{"ns": elapsed}``;
``{"cmd": "quit"}`` answers ``{"evidence": ...}`` and exits. Errors answer ``{"error": ...}``.
Anything the code under test prints goes to stderr, never into the protocol.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time
import traceback
from typing import Any


def main() -> int:
    # Keep the protocol on a private copy of stdout; stray prints go to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(msg: dict[str, Any]) -> None:
        proto.write(json.dumps(msg) + "\n")
        proto.flush()

    try:
        spec = json.loads(sys.argv[1])
        cpu = spec.get("cpu")
        if cpu is not None:
            os.sched_setaffinity(0, {int(cpu)})
        import _workloads as wl

        engine, run = wl.WORKLOADS[spec["workload"]](spec.get("params", {}))
        applied = wl.apply_config(engine, spec["config"])
        warmup = int(spec.get("warmup", 0))
        if warmup:
            run(warmup)
        pinned = wl.pin_server_backends(spec["params"]) if "url" in spec["params"] else []
        gc.collect()
        send(
            {
                "ready": True,
                "pid": os.getpid(),
                "affinity": sorted(os.sched_getaffinity(0)),
                "server_backends_pinned": pinned,
            }
        )
    except BaseException as e:
        send({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
        return 1

    perf, cpu_ns = time.perf_counter_ns, time.process_time_ns
    # Context switches of all the worker's threads in the timed rounds: a configuration that
    # makes threads block (a contended lock, a GIL convoy) shows here before it shows in time.
    switches = {"ops": 0, "voluntary": 0, "involuntary": 0}
    for line in sys.stdin:
        try:
            msg = json.loads(line)
            if msg["cmd"] == "round":
                n = int(msg["n"])
                gc.collect()
                gc.disable()
                try:
                    r0 = resource.getrusage(resource.RUSAGE_SELF)
                    c0 = cpu_ns()
                    t0 = perf()
                    run(n)
                    t1 = perf()
                    c1 = cpu_ns()
                    r1 = resource.getrusage(resource.RUSAGE_SELF)
                finally:
                    gc.enable()
                switches["ops"] += n
                switches["voluntary"] += r1.ru_nvcsw - r0.ru_nvcsw
                switches["involuntary"] += r1.ru_nivcsw - r0.ru_nivcsw
                send({"ns": t1 - t0, "cpu_ns": c1 - c0})
            elif msg["cmd"] == "quit":
                ev = wl.evidence(applied, spec["config"])
                if switches["ops"]:
                    ev["csw_per_op"] = round(
                        (switches["voluntary"] + switches["involuntary"]) / switches["ops"], 2
                    )
                if applied.handle is not None and hasattr(applied.handle, "uninstrument"):
                    applied.handle.uninstrument()
                if hasattr(engine, "dispose"):
                    engine.dispose()
                elif not hasattr(engine, "__aenter__"):  # a psycopg_pool pool (async: exit)
                    engine.close()
                send({"evidence": ev})
                return 0
            else:
                raise ValueError(f"unknown command {msg!r}")
        except BaseException as e:
            send({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
