import threading
import time

import pytest

from tasks.timelimit import TimeLimitExceeded, Watchdog


def busy(seconds: float) -> int:
    end, n = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        n += 1
    return n


def test_a_slow_call_is_interrupted_and_the_next_ones_run():
    with Watchdog() as dog:
        start = time.monotonic()
        with pytest.raises(TimeLimitExceeded):
            with dog.limit(0.1):
                busy(5.0)
        assert time.monotonic() - start < 1.0
        for _ in range(50):
            with dog.limit(1.0):
                busy(0.001)


def test_works_in_a_worker_thread():
    outcome = []

    def worker():
        with Watchdog() as dog:
            try:
                with dog.limit(0.1):
                    busy(5.0)
            except TimeLimitExceeded:
                outcome.append("stopped")
            with dog.limit(1.0):
                outcome.append(busy(0.01) > 0)

    t = threading.Thread(target=worker)
    t.start()
    t.join(5)
    assert outcome == ["stopped", True]
