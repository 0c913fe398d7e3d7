"""Worker threads for CPU-heavy speech work (Whisper inference, Piper synthesis) at background priority.

Running inference in a thread keeps the GIL free, but on a 2-core machine the inference's own compute
threads still take both cores, and the event-loop thread then waits for the scheduler: measured stalls of
50-250 ms while a 60 s note was transcribed. Lowering the workers' priority (nice 19) lets the loop thread
preempt them at once. Threads inherit their creator's priority on Linux, so the compute pools that
CTranslate2 and ONNX Runtime start from these workers are background threads too.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)

BACKGROUND_NICE = 19


def _lower_priority() -> None:
    try:
        # On Linux a thread id here means "this thread only"; raising niceness needs no privilege.
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
    except (AttributeError, OSError) as exc:  # not Linux/Unix: plain threads are still correct
        log.debug("cannot lower the priority of %s: %s", threading.current_thread().name, exc)


def background_executor(workers: int, name: str) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name, initializer=_lower_priority)
