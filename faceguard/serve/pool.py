"""Worker processes for ``faceguard serve``: each builds one :class:`~faceguard.serve.engine.Engine`
when it starts and reuses it for every photo, so models load once per process, not per request.

Requests are queued (the executor's queue, bounded by :attr:`Limits.max_queue` in the app) and each
worker takes one photo at a time, so concurrent uploads wait their turn instead of competing for
memory. Workers are started with ``spawn`` (a fork of a process running an event loop and torch
threads is unsafe) and each gets ``threads`` torch threads (default: the CPU cores divided among
the workers). ``workers=0`` runs everything in one thread of the server process (tests, debugging).
A worker that dies (killed, out of memory) fails only its own photo: the pool is started again.
"""
from __future__ import annotations

import asyncio
import concurrent.futures as cf
import multiprocessing
import os
import threading
from collections.abc import Callable

_ENGINE = None  # this worker process's engine


def _start_worker(factory: Callable[[], object], threads: int) -> None:
    """Worker initializer: set the thread count, then load the models once."""
    global _ENGINE
    import torch

    torch.set_num_threads(threads)
    _ENGINE = factory()


def _call(name: str, *args: object) -> object:
    """Run ``Engine.<name>(*args)`` in a worker."""
    return getattr(_ENGINE, name)(*args)


def default_threads(workers: int) -> int:
    """Torch threads per worker: $OMP_NUM_THREADS when set, else the cores shared among workers."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    return max(1, (os.cpu_count() or 1) // max(workers, 1))


class WorkerPool:
    """``workers`` processes (or, with 0, one in-process thread), each with one engine from ``factory``.

    ``factory`` must be picklable for processes (a module-level callable or a ``functools.partial``).
    :meth:`submit` returns an awaitable; :attr:`pending` counts calls not finished yet.
    """

    def __init__(self, factory: Callable[[], object], workers: int = 1, threads: int | None = None) -> None:
        if workers < 0:
            raise ValueError(f"workers must be 0 (in-process) or more, got {workers}")
        self.factory, self.workers = factory, workers
        self.threads = threads or default_threads(workers)
        self.pending = 0
        self._engine = None
        self._engine_lock, self._count_lock = threading.Lock(), threading.Lock()
        self._executor = self._new_executor()

    def _new_executor(self) -> cf.Executor:
        if self.workers == 0:
            return cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="faceguard-serve")
        return cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_start_worker, initargs=(self.factory, self.threads))

    def _in_thread(self, name: str, *args: object) -> object:
        with self._engine_lock:
            if self._engine is None:
                self._engine = self.factory()
        return getattr(self._engine, name)(*args)

    def submit_future(self, name: str, *args: object) -> cf.Future:
        """Queue ``Engine.<name>(*args)``; the concurrent future (cancellable while still queued)."""
        call = (self._in_thread, name) if self.workers == 0 else (_call, name)
        try:
            future = self._executor.submit(*call, *args)
        except cf.process.BrokenProcessPool:  # a worker died: start the pool again
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._new_executor()
            future = self._executor.submit(*call, *args)
        with self._count_lock:
            self.pending += 1

        def finished(_: cf.Future) -> None:
            with self._count_lock:
                self.pending -= 1

        future.add_done_callback(finished)
        return future

    async def run(self, name: str, *args: object) -> object:
        """``Engine.<name>(*args)`` in a worker, awaited."""
        return await asyncio.wrap_future(self.submit_future(name, *args))

    async def warm_up(self) -> None:
        """Start every worker and wait until each has loaded its models."""
        await asyncio.gather(*(self.run("ping") for _ in range(max(self.workers, 1))))

    def close(self) -> None:
        """Cancel what is queued and stop the workers."""
        self._executor.shutdown(wait=True, cancel_futures=True)
