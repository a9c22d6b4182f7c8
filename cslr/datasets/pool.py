"""The converters' process pool: jobs -> results in worker processes, with progress, failing fast, and workers that
never outlive the process that started them.

    results = run_pool(convert_shard, jobs, workers=4, on_progress=bar.update)   # [convert_shard(job, on_video)]
    run_pool(partial(extract, corpus), items, workers=2, on_result=record)      # record(item, result) as each ends

`fn(job, on_video)` runs in a worker; every `on_video()` call there reaches `on_progress(1)` here. A job's exception
is re-raised here, and the jobs not started yet are cancelled (running ones finish; their writes are atomic).

A worker watches its parent: when the process that started it is gone (SIGKILL, OOM killer, a node failure), it
exits within `PARENT_POLL_S` instead of waiting forever on a task queue that nobody feeds (a forked worker holds the
queue's write end itself, so it never sees end-of-file). The check is the parent pid (`os.getppid()` changes when
the parent dies and the worker is re-parented), on a daemon thread, so a busy worker stops too.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_lib
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Callable, Sequence

PARENT_POLL_S = 0.5  # how often a worker checks that its parent is alive

_progress_queue = None  # set in pool workers: one item per on_video() call


def _watch_parent(ppid: int) -> None:
    while True:
        time.sleep(PARENT_POLL_S)
        if os.getppid() != ppid:
            os._exit(1)  # the parent died: nothing will collect this worker's result


def _init_worker(q) -> None:
    global _progress_queue
    _progress_queue = q
    threading.Thread(target=_watch_parent, args=(os.getppid(),), name="parent-watch", daemon=True).start()


def _report() -> None:
    _progress_queue.put(1)


def _run_in_worker(fn: Callable, job):
    return fn(job, _report)


def run_pool(fn: Callable, jobs: Sequence, workers: int, on_progress: Callable[[int], object] = lambda n: None,
             on_result: Callable[[object, object], object] | None = None) -> list:
    """[fn(job, on_video) for job in jobs], in `workers` processes (in this one when workers <= 1 or one job).

    `on_result(job, result)` runs here as each job finishes (in completion order): to record progress that must
    survive an interruption (a resumable run's progress file) before the other jobs are done.
    """
    if workers <= 1 or len(jobs) <= 1:
        results = []
        for job in jobs:
            results.append(fn(job, lambda: on_progress(1)))
            if on_result is not None:
                on_result(job, results[-1])
        return results
    ctx = mp.get_context()
    q = ctx.Queue()

    def drain():
        while True:
            try:
                on_progress(q.get_nowait())
            except queue_lib.Empty:
                return

    results = [None] * len(jobs)
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(q,))
    try:
        pending = {pool.submit(_run_in_worker, fn, job): i for i, job in enumerate(jobs)}
        while pending:
            done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            drain()
            for fut in done:
                i = pending.pop(fut)
                results[i] = fut.result()  # re-raises a worker's error here
                if on_result is not None:
                    on_result(jobs[i], results[i])
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)  # fail fast; running jobs finish atomically
        raise
    pool.shutdown()
    drain()
    return results
