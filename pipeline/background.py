"""Overlap a loop's reads and writes with its compute: one reader thread ahead, one writer thread behind.

Zarr reads and writes (decompression, checksums, file I/O) release the GIL for most of their
time, so on a 2-core machine a block's encode overlaps the next block's read and the last
block's write (harvest does the same with its writes)."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


def read_ahead(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """`items`, produced on a background thread at most `depth` ahead of the consumer.
    An exception in the producer is raised in the consumer, at the item where it happened."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                buffer.put((item, None))
            buffer.put((_DONE, None))
        except BaseException as exc:  # handed to the consumer
            buffer.put((_DONE, exc))

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item, error = buffer.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full buffer
            try:
                buffer.get_nowait()
            except queue.Empty:
                thread.join(0.01)


@contextmanager
def background_writes() -> Iterator[Callable[..., None]]:
    """`submit(fn, *args)` runs fn on one writer thread, in order; at most one write is pending, so
    memory stays bounded. Leaving the block waits for every write and raises the first failure."""
    pending: list[Future] = []
    with ThreadPoolExecutor(max_workers=1) as writer:
        def submit(fn: Callable[..., None], *args) -> None:
            while pending:
                pending.pop(0).result()
            pending.append(writer.submit(fn, *args))

        yield submit
        while pending:
            pending.pop(0).result()
