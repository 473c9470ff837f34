"""A per-call time limit that works in any thread.

Signal-based limits (SIGALRM) only work in a process's main thread, and the data stages run in
worker threads too. So a watchdog thread raises `TimeLimitExceeded` inside the worker with
CPython's PyThreadState_SetAsyncExc. The exception lands at the worker's next Python bytecode:
a call stuck inside one long C function is interrupted when it returns to Python.
"""

from __future__ import annotations

import ctypes
import threading
import time


class TimeLimitExceeded(Exception):
    pass


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(exc) if exc else ctypes.c_void_p(0))


class Watchdog:
    """One watchdog thread guarding many short calls of one worker thread:

        with Watchdog() as dog:
            for doc in docs:
                with dog.limit(5.0):
                    work(doc)
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._target = threading.get_ident()
        self._stop = False
        self._fired = False
        self._thread = threading.Thread(target=self._run, name="time-limit-watchdog", daemon=True)

    def __enter__(self) -> "Watchdog":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        with self._cond:
            while not self._stop:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                self._deadline = None
                self._fired = True
                _raise_in(self._target, TimeLimitExceeded)

    def limit(self, seconds: float) -> "_Limit":
        return _Limit(self, seconds)


class _Limit:
    def __init__(self, dog: Watchdog, seconds: float):
        self.dog, self.seconds = dog, seconds

    def __enter__(self) -> None:
        with self.dog._cond:
            self.dog._fired = False
            self.dog._deadline = time.monotonic() + self.seconds
            self.dog._cond.notify()

    def __exit__(self, exc_type, exc, tb) -> bool:
        with self.dog._cond:
            self.dog._deadline = None
            fired = self.dog._fired
            self.dog._fired = False
        if fired and exc_type is None:
            # The block finished just as the limit fired: withdraw the exception if it has not
            # been raised yet, and report the overrun all the same.
            _raise_in(self.dog._target, None)
            raise TimeLimitExceeded
        return False
