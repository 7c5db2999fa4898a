"""The read-ahead and write-behind threads of the SAE stages: same items in the same order,
failures raised in the caller, no thread left behind."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from pipeline.background import background_writes, read_ahead


def test_read_ahead_yields_every_item_in_order():
    assert list(read_ahead(iter(range(100)), depth=3)) == list(range(100))


def test_a_failure_in_the_reader_reaches_the_consumer_after_the_items_before_it():
    def items():
        yield from range(5)
        raise OSError("chunk 5 unreadable")

    seen = []
    with pytest.raises(OSError, match="chunk 5 unreadable"):
        for item in read_ahead(items()):
            seen.append(item)
    assert seen == list(range(5))


def test_closing_an_endless_stream_stops_its_thread():
    before = threading.active_count()
    stream = read_ahead(itertools.count(), depth=2)
    assert [next(stream) for _ in range(10)] == list(range(10))
    stream.close()
    assert threading.active_count() == before


def test_writes_run_in_order_and_are_all_done_when_the_block_ends():
    done = []

    def slow_append(value):
        time.sleep(0.001)
        done.append(value)

    with background_writes() as write:
        for value in range(50):
            write(slow_append, value)
    assert done == list(range(50))


def test_a_failed_write_is_raised_by_the_writer():
    def fail(value):
        raise ValueError(f"disk full at {value}")

    with pytest.raises(ValueError, match="disk full at 0"):
        with background_writes() as write:
            write(fail, 0)
            write(fail, 1)
