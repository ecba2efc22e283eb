"""Run a study's independent runs: one after another in this process, in N local worker processes, or on Ray.

A ``Job`` is one run: a top-level function, its keyword arguments (both picklable) and its run folder. A job
is finished when its folder holds ``study.json`` (written last, atomically), so a stopped study continues
where it stopped. A job that raises is retried once, then reported by name. Every run pins the same number
of CPU threads whatever the executor, since float sums split over another number of threads round
differently: the same plan gives the same numbers sequentially, in worker processes or on Ray.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from fashion_conv.utils.atomic import atomic_write_text
from fashion_conv.utils.errors import FashionConvError

RESULT_FILE = "study.json"
RETRIES = 1


def add_spread_arguments(parser) -> None:
    """The options of every study that say where its runs go."""
    parser.add_argument("--workers", type=int, default=1,
                        help="runs at a time: local worker processes (one GPU each when there are GPUs), or with "
                             "--ray-address the most Ray tasks at a time (default: 1, in this process)")
    parser.add_argument("--ray-address", metavar="auto|HOST:PORT",
                        help="run on this Ray cluster (pip install 'fashion_conv[ray]'); auto: the one `ray start` started here")
    parser.add_argument("--threads-per-run", type=int, default=1,
                        help="CPU threads of each run, the same whatever --workers, since the thread count changes "
                             "float rounding and so the numbers (default: 1; for speed, --workers = cores / threads per run)")  # fmt: skip


def check_spread_arguments(args) -> None:
    if args.workers < 1 or args.threads_per_run < 1:
        raise FashionConvError(f"--workers and --threads-per-run must be at least 1, got {args.workers}, {args.threads_per_run}")


def stopped_hint(command: str) -> str:
    return f"Stopped by SIGTERM; finished runs are kept: run `{command}` again to continue where it stopped."


@dataclass(frozen=True)
class Job:
    name: str  # how progress lines and failure reports name the run, e.g. "cnn seed 1"
    run_dir: Path  # relative to cwd; finished when run_dir/study.json exists
    fn: Callable[..., dict]  # a module-level function, so worker processes and Ray can import it
    kwargs: dict = field(default_factory=dict)
    cwd: str = field(default_factory=os.getcwd)  # on a Ray cluster: the same path on a shared filesystem


@dataclass
class Outcome:
    results: dict[str, dict]  # job name -> what its function returned (read back for finished runs)
    failed: dict[str, str]  # job name -> its last error, after the retry


class StudyStopped(BaseException):
    """SIGTERM reached the study: stop the runs; the next start continues where this one stopped."""


def finished(job: Job, threads: int) -> dict | None:
    """What the job returned, if its run folder holds it from a run with the same settings (else it runs again)."""
    path = Path(job.cwd) / job.run_dir / RESULT_FILE
    saved = json.loads(path.read_text()) if path.is_file() else {}
    return saved.get("result") if saved.get("settings") == settings(job, threads) else None


def settings(job: Job, threads: int) -> str:
    """The job's function, arguments and threads as text: a run folder left by other settings is not finished."""
    return f"{job.fn.__module__}.{job.fn.__qualname__}({job.kwargs!r}), {threads} threads"


def execute(job: Job, threads: int) -> dict:
    """Run one job where it is called (this process, a worker process, a Ray task); write its ``study.json``."""
    import torch

    if not os.path.isdir(job.cwd):
        raise FashionConvError(f"{job.cwd} does not exist on this machine: a study on a cluster needs a shared filesystem")
    os.chdir(job.cwd)
    torch.set_num_threads(threads)
    result = job.fn(**job.kwargs)
    atomic_write_text(job.run_dir / RESULT_FILE, json.dumps({"settings": settings(job, threads), "result": result}) + "\n")
    return result


def run_jobs(
    jobs: list[Job], workers: int = 1, ray_address: str | None = None, threads: int = 1,
    describe: Callable[[dict], str] = lambda r: "done",
) -> Outcome:  # fmt: skip
    """Run the unfinished ``jobs`` (at most ``workers`` at a time), printing a progress line per finished run."""
    outcome = Outcome({}, {})
    todo = []
    for job in jobs:
        done = finished(job, threads)
        if done is None:
            todo.append(job)
        else:
            outcome.results[job.name] = done
    if not todo:
        print(f"all {len(jobs)} runs already finished", flush=True)
        return outcome
    _quiet()
    previous, executor = signal.signal(signal.SIGTERM, _raise_stopped), None
    try:
        if ray_address:
            executor = RayExecutor(ray_address, workers, threads)
        elif workers > 1:
            executor = ProcessExecutor(min(workers, len(todo)), threads)
        else:
            executor = InlineExecutor(threads)
        print(f"{len(jobs) - len(todo)} of {len(jobs)} runs already finished; {len(todo)} to run on {executor}", flush=True)
        _loop(todo, executor, outcome, describe, len(jobs))
    finally:
        if executor is not None:
            executor.close()
        signal.signal(signal.SIGTERM, previous)
    return outcome


def _raise_stopped(signum, frame):
    raise StudyStopped()


def _loop(todo: list[Job], executor, outcome: Outcome, describe, total: int) -> None:
    pending, running, attempts = deque(range(len(todo))), set(), [0] * len(todo)
    start, finished_now = time.perf_counter(), 0
    while pending or running:
        while pending and len(running) < executor.capacity:
            index = pending.popleft()
            running.add(index)
            executor.submit(index, todo[index])
        for index, result, error in executor.poll():
            running.discard(index)
            job = todo[index]
            if error is None:
                outcome.results[job.name] = result
                finished_now += 1
                eta = (time.perf_counter() - start) / finished_now * (len(pending) + len(running))
                starting = min(len(pending), executor.capacity - len(running))  # refilled right after this line
                print(f"[{len(outcome.results)}/{total}] {job.name}: {describe(result)} | running {len(running) + starting}, "
                      f"left {len(pending) - starting}, ETA {_minutes(eta)}", flush=True)  # fmt: skip
            elif attempts[index] < RETRIES:
                attempts[index] += 1
                pending.appendleft(index)
                print(f"run {job.name} failed ({error.splitlines()[-1]}); retrying once", flush=True)
            else:
                outcome.failed[job.name] = error
                print(f"run {job.name} failed twice: {error.splitlines()[-1]}", file=sys.stderr, flush=True)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class InlineExecutor:
    """One run at a time in this process (the default): no start-up cost, and tracebacks where you are."""

    capacity = 1

    def __init__(self, threads: int):
        import torch

        self.threads, self.queue = threads, []
        self.previous = torch.get_num_threads(), os.getcwd()  # restored when the study is done

    def __str__(self) -> str:
        return f"this process ({self.threads} thread{'s' * (self.threads > 1)} per run)"

    def submit(self, index: int, job: Job) -> None:
        self.queue.append((index, job))

    def poll(self) -> list[tuple[int, dict | None, str | None]]:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        index, job = self.queue.pop()
        try:
            return [(index, execute(job, self.threads), None)]
        except SIGTERMException:  # Lightning's own handler got there first
            raise StudyStopped() from None
        except Exception as exc:
            return [(index, None, _error(exc))]

    def close(self) -> None:
        import torch

        torch.set_num_threads(self.previous[0])
        os.chdir(self.previous[1])


def _worker(threads: int, gpu: int | None, tasks, results) -> None:
    """A local worker process: run the jobs it is sent until it gets ``None``."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)  # one GPU per worker, before CUDA starts
    _quiet()
    while (item := tasks.get()) is not None:
        index, job = item
        try:
            results.put((index, execute(job, threads), None))
        except Exception as exc:
            results.put((index, None, _error(exc)))


def _quiet() -> None:
    """Worker processes print one progress line per run, through the study: not Lightning's banners."""
    import logging
    import warnings

    from fashion_conv.utils import quiet

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
    quiet.install()  # the noise fit drops too (Lightning's tips, its LeafSpec deprecation)
    warnings.filterwarnings("ignore", ".*args parameter is intended.*")  # a study's runs get a config, not its argv


class ProcessExecutor:
    """N local worker processes (spawned, so each starts clean), each with its threads and, if present, its GPU."""

    def __init__(self, workers: int, threads: int):
        import torch

        self.capacity, self.threads = workers, threads
        self.gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        self.ctx = mp.get_context("spawn")
        self.results = self.ctx.Queue()
        self.slots = [self._start(slot) for slot in range(workers)]
        self.jobs: dict[int, int] = {}  # job index -> slot running it

    def __str__(self) -> str:
        per = f"{self.threads} thread{'s' * (self.threads > 1)}" + (", 1 GPU" if self.gpus else "")
        return f"{self.capacity} worker processes ({per} each)"

    def _start(self, slot: int) -> tuple:
        tasks = self.ctx.Queue()
        gpu = slot % self.gpus if self.gpus else None
        process = self.ctx.Process(target=_worker, args=(self.threads, gpu, tasks, self.results), daemon=True)
        process.start()
        return process, tasks

    def submit(self, index: int, job: Job) -> None:
        busy = set(self.jobs.values())
        slot = next(s for s in range(self.capacity) if s not in busy)
        self.jobs[index] = slot
        self.slots[slot][1].put((index, job))

    def poll(self) -> list[tuple[int, dict | None, str | None]]:
        try:
            index, result, error = self.results.get(timeout=1.0)
        except queue.Empty:
            return self._dead()
        self.jobs.pop(index, None)
        return [(index, result, error)]

    def _dead(self) -> list[tuple[int, dict | None, str | None]]:
        """Jobs whose worker process died (killed, out of memory): failures, and a fresh worker in its place."""
        lost = []
        for index, slot in list(self.jobs.items()):
            process = self.slots[slot][0]
            if not process.is_alive():
                lost.append((index, None, f"worker process died (exit code {process.exitcode})"))
                del self.jobs[index]
                self.slots[slot] = self._start(slot)
        return lost

    def close(self) -> None:
        busy = set(self.jobs.values())
        for slot, (process, tasks) in enumerate(self.slots):
            if slot in busy:
                process.kill()  # stopped mid-run: the next start trains this run again from its start
            else:
                tasks.put(None)  # idle: let it finish on its own
        for process, _ in self.slots:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()


class RayExecutor:
    """Runs as Ray tasks on the cluster at ``address`` (``auto``: the one started with ``ray start`` here)."""

    def __init__(self, address: str, workers: int, threads: int):
        try:
            import ray
        except ImportError:
            raise FashionConvError("--ray-address needs Ray: pip install 'fashion_conv[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            try:
                ray.init(address=address, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise FashionConvError(f"--ray-address {address}: no Ray cluster there ({str(exc).splitlines()[0]})") from None
        resources = ray.cluster_resources()
        gpus = 1 if resources.get("GPU", 0) > 0 else 0
        self.remote = ray.remote(num_cpus=threads, num_gpus=gpus, max_retries=0)(execute)
        slots = int(resources.get("GPU", 0)) if gpus else int(resources.get("CPU", 1) // threads)
        self.capacity = workers if workers > 1 else max(1, slots)
        self.threads, self.refs = threads, {}

    def __str__(self) -> str:
        return f"Ray ({self.capacity} runs at a time, {self.threads} thread{'s' * (self.threads > 1)} each)"

    def submit(self, index: int, job: Job) -> None:
        self.refs[self.remote.remote(job, self.threads)] = index

    def poll(self) -> list[tuple[int, dict | None, str | None]]:
        ready, _ = self.ray.wait(list(self.refs), num_returns=1, timeout=1.0)
        done = []
        for ref in ready:
            index = self.refs.pop(ref)
            try:
                done.append((index, self.ray.get(ref), None))
            except self.ray.exceptions.RayTaskError as exc:
                cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                done.append((index, None, _error(cause)))
            except self.ray.exceptions.RayError as exc:  # a worker or node lost
                done.append((index, None, _error(exc)))
        return done

    def close(self) -> None:
        for ref in self.refs:
            self.ray.cancel(ref, force=True)
