#!/usr/bin/python3
"""The Python baseline of benchmarks/process_pool.cpp: the same tasks on
concurrent.futures.ProcessPoolExecutor.

Prints one line per scenario, "<scenario> <nanoseconds per unit>", where the unit is
the one the C++ benchmark reports for that scenario (a task, or a whole start-up).
Run it alone to see the numbers:  /usr/bin/python3 benchmarks/baselines/process_pool.py
Set PTK_BENCH_QUICK=1 for smaller counts.
"""
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

QUICK = os.environ.get("PTK_BENCH_QUICK") == "1"


def trivial(x):
    return x


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


_barrier = None


def _init(barrier):
    global _barrier
    _barrier = barrier


def wait_all_started(_):
    _barrier.wait()  # returns once every worker is running a task
    return os.getpid()


def latency(n):
    """One task in flight: submit, wait for the result, repeat (1 worker)."""
    with ProcessPoolExecutor(max_workers=1) as ex:
        ex.submit(trivial, 0).result()  # the worker is up
        t0 = time.perf_counter()
        for i in range(n):
            ex.submit(trivial, i).result()
        return (time.perf_counter() - t0) / n


def throughput(n, workers=2):
    """n trivial tasks all submitted, then all waited for."""
    with ProcessPoolExecutor(max_workers=workers) as ex:
        list(ex.map(trivial, range(workers * 4)))  # the workers are up
        t0 = time.perf_counter()
        futures = [ex.submit(trivial, i) for i in range(n)]
        for f in futures:
            f.result()
        return (time.perf_counter() - t0) / n


def cpu(n, count, workers=2):
    """count fib(n) tasks on `workers` workers: time per task."""
    with ProcessPoolExecutor(max_workers=workers) as ex:
        list(ex.map(trivial, range(workers * 4)))
        t0 = time.perf_counter()
        futures = [ex.submit(fib, n) for _ in range(count)]
        for f in futures:
            f.result()
        return (time.perf_counter() - t0) / count


def startup(method, workers=4, rounds=3):
    """Pool creation until every worker runs a task (a barrier forces all to start)."""
    ctx = mp.get_context(method)
    best = []
    for _ in range(rounds):
        barrier = ctx.Barrier(workers)
        t0 = time.perf_counter()
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init,
                                 initargs=(barrier,)) as ex:
            pids = set(ex.map(wait_all_started, range(workers)))
            took = time.perf_counter() - t0
        assert len(pids) == workers
        best.append(took)
    best.sort()
    return best[len(best) // 2]


def main():
    which = set(sys.argv[1:]) or {"latency", "throughput", "cpu", "startup"}
    rows = []
    if "latency" in which:
        rows.append(("BM_pool_latency_trivial", latency(500 if QUICK else 3000)))
    if "throughput" in which:
        rows.append(("BM_pool_throughput_trivial_2w", throughput(5000 if QUICK else 20000)))
    if "cpu" in which:
        rows.append(("BM_pool_fib25_x16_2w", cpu(25, 16)))
    if "startup" in which:
        rows.append(("BM_pool_startup_4w_fork", startup("fork")))
        rows.append(("BM_pool_startup_4w_spawn", startup("spawn")))
    for name, seconds in rows:
        print(f"{name} {seconds * 1e9:.0f}", flush=True)


if __name__ == "__main__":
    main()
