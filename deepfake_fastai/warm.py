"""Warm workers: each sweep run in its own process, forked from a runner that has imported torch/fastai/timm.

Why: a fresh ``python -m deepfake_fastai.worker`` spent ~23 s of every run importing torch, fastai and timm
(BENCHMARKS.md). Inside ``with warm.workers():`` the runner imports them once (its preflight already imports
torch and timm) and ``run_worker`` forks one child per run: the child has its own pid, status.json, log and
exit code as before, and a crash (segfault, ``os._exit``, the OOM killer) ends only the child. A child gets
SIGKILL when the runner dies, as the fresh workers do.

CUDA must not be initialised in the process that forks (a CUDA context does not survive fork): nothing in the
runner touches CUDA (imports do not; the check is ``torch.cuda.is_initialized``), each child initialises its
own, so a CUDA OOM retry starts clean. Nor may the runner have run torch's OpenMP threads (e.g. trained
in-process, as a test session or a notebook does): GNU libgomp's pool does not survive fork, and a forked
child hung in its first parallel op (measured here), so ``workers()`` forks one probe child first. Where fork
cannot be used (not Linux; another interpreter asked for; CUDA initialised; OpenMP used; ``sweep --cold``)
each run starts a fresh interpreter, as before, said once in the log. Outside the block, e.g. in the Ray
backend's tasks (multi-threaded processes, unsafe to fork), runs always start a fresh interpreter.
"""

from __future__ import annotations

import contextlib
import faulthandler
import gc
import importlib
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, NoReturn

log = logging.getLogger(__name__)

# What a run imports (train.run -> learner, bce_recipe, traces); loaded once in the runner, shared by fork
PRELOAD = ("torch", "timm", "fastai.vision.all", "deepfake_fastai.train", "deepfake_fastai.learner",
           "deepfake_fastai.bce_recipe", "deepfake_fastai.traces", "deepfake_fastai.worker")
_warm = False  # True inside workers() when forking is safe


@contextlib.contextmanager
def workers(enabled: bool = True, python: str | None = None) -> Iterator[bool]:
    """Within this block ``run_worker`` forks warm children where it can; yields whether it will."""
    global _warm
    reason = cold_reason(enabled, python or sys.executable)
    if reason is None:
        for name in PRELOAD:
            importlib.import_module(name)
        reason = cold_reason(enabled, python or sys.executable)  # an import that touched CUDA would show here
    if reason is None and _forked_child_hangs():
        reason = "this process has run torch's OpenMP threads, which a forked child cannot use"
    if reason:  # asked for (--cold): info; otherwise the user should know why the sweep is slower
        (log.info if not enabled else log.warning)("each run starts a fresh interpreter (%s): ~20 s of imports "
                                                   "per run", reason)
    previous, _warm = _warm, reason is None
    try:
        yield _warm
    finally:
        _warm = previous


def cold_reason(enabled: bool, python: str) -> str | None:
    """Why runs cannot be forked from this process, or None when they can."""
    if not enabled:
        return "warm workers switched off (--cold)"
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return f"warm workers fork, which this toolkit uses on Linux only, not {sys.platform}"
    if os.path.abspath(python) != os.path.abspath(sys.executable):  # not resolved: a venv links to its base
        return f"the workers use another interpreter ({python})"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "CUDA is initialised in the runner, and a CUDA context does not survive fork"
    return None


def _forked_child_hangs(timeout_s: float = 10.0) -> bool:
    """Fork a child that runs one parallel torch op; True when it has not finished within ``timeout_s``."""
    import torch

    pid = os.fork()
    if pid == 0:
        torch.ones(1 << 20).sum()  # large enough for ATen's parallel_for (OpenMP)
        os._exit(0)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG)[0]:
            return False
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return True


def run_worker(python: str, config: Path, console: IO | None = None,
               child: Callable[[list[str]], int] | None = None) -> int:
    """Run the worker's ``main`` on a run's config.yaml in its own process; its exit code (negative: that signal).

    ``console``: a file for the run's stdout and stderr (None: this process's console). ``child``: the worker's
    ``main``, run in the forked process (passed in, so this module never imports the worker: no cycle).
    """
    if _warm and child is not None and cold_reason(True, python) is None:
        return _forked(config, console, child)
    stderr = subprocess.STDOUT if console is not None else None
    return subprocess.run([python, "-m", "deepfake_fastai.worker", str(config)], preexec_fn=die_with_parent,
                          stdout=console, stderr=stderr, check=False).returncode


def _forked(config: Path, console: IO | None, child: Callable[[list[str]], int]) -> int:
    for stream in (sys.stdout, sys.stderr):  # or the child would write this process's buffered text again
        stream.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        _child(parent, config, console, child)
    try:
        _, status = os.waitpid(pid, 0)
    except BaseException:  # Ctrl-C in the runner: like subprocess.run, no run outlives it
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    return os.waitstatus_to_exitcode(status)


def _child(parent: int, config: Path, console: IO | None, main: Callable[[list[str]], int]) -> NoReturn:
    """The forked run: a fresh interpreter's streams, signals and logging, then worker.main; never returns."""
    code = 1
    try:
        die_with_parent()
        if os.getppid() != parent:  # the runner died between fork and prctl
            os._exit(1)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if console is not None:
            os.dup2(console.fileno(), 1)
            os.dup2(console.fileno(), 2)
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__  # the fds, not the runner's redirections
        faulthandler.enable()  # a segfault leaves the run's Python traceback in its console (worker.log)
        root = logging.getLogger()
        for handler in root.handlers[:]:  # worker.main configures logging as in a fresh interpreter
            root.removeHandler(handler)
        code = main([str(config)])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - whatever happens, the child must not return into the runner
        traceback.print_exc()
    finally:
        gc.collect()  # DataLoader iterators shut their worker processes down
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def die_with_parent() -> None:
    """Linux: this process gets SIGKILL when its parent (the sweep runner) dies, so no orphan keeps training."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except OSError:
        pass
