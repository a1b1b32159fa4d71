"""The worker processes of a folder prediction: readers decode and preprocess cases ahead of the network, writers
finish and write them behind it, so the device never waits for gzip and numpy.

Readers are a PyTorch `DataLoader` (ordered delivery, bounded prefetch, inputs handed over in shared memory, pinned
for the GPU, workers that exit with their parent); writers a process pool whose workers ignore Ctrl-C, so an
interrupted run lets the writes under way finish (atomically) and stops. Processes, not threads: numpy and nibabel
hold the GIL in places. `workers = 0` runs everything in this process, one step after another.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

import torch
from torch.utils.data import DataLoader, Dataset

from medseg.core import Case
from medseg.inference.case_predict import PreparedCase, prepare_case
from medseg.transforms.preprocess import PreprocessPlan

MAX_WORKERS = 16
READ_AHEAD = 2  # cases each reader prepares ahead of the network
SHM_NEEDED = 2**30  # /dev/shm below this (docker's default is 64 MB) cannot hold the cases in flight


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers(n_cases: int, device: torch.device) -> int:
    """Readers for a GPU run: one per core but the main process's (at most 16); none for a single case, where
    there is nothing to overlap, and none when the network runs on the CPU, whose threads need every core (2-core
    CPU: 20 % slower with one or two workers; benchmarks/RESULTS.md, "Folder throughput")."""
    if n_cases < 2 or device.type == "cpu":
        return 0
    return max(1, min(usable_cores() - 1, n_cases, MAX_WORKERS))


def writer_count(workers: int) -> int:
    """Writing a mask costs about a third of reading and preprocessing four channels."""
    return max(1, workers // 3) if workers else 0


def resolve_workers(requested: int | None, n_cases: int, device: torch.device) -> tuple[int, str]:
    """Reader processes for this run (`requested`, or the default when None) and why there are none when
    /dev/shm is too small to hand cases over ('' otherwise): a docker default fails them with a bus error mid-run."""
    workers = default_workers(n_cases, device) if requested is None else requested
    if not workers or not os.path.isdir("/dev/shm"):
        return workers, ""
    free = shutil.disk_usage("/dev/shm").free
    if free >= SHM_NEEDED:
        return workers, ""
    return 0, (
        f"/dev/shm has {free / 2**20:.0f} MB free, too little for worker processes: running in one process "
        "(docker: add --shm-size=2g)"
    )


class _Reader(Dataset):
    """Case i, read and preprocessed (or only read, for the device to preprocess); a failure is returned (not
    raised) so the other cases go on."""

    def __init__(self, cases: Sequence[Case], plan: PreprocessPlan, allow_missing: bool, on_device: bool) -> None:
        self.cases, self.plan, self.allow_missing, self.on_device = cases, plan, allow_missing, on_device

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int) -> PreparedCase | Exception:
        try:
            prepared = prepare_case(self.cases[i], self.plan, self.allow_missing, self.on_device)
        except Exception as exc:  # recorded as this case's failure by the predictor
            return exc
        # tensors cross to the main process in shared memory
        if prepared.pre is not None:
            prepared.pre.image = torch.from_numpy(prepared.pre.image)
        else:
            prepared.raw = torch.from_numpy(prepared.raw)
        return prepared


def _as_is(item):
    return item


def prepared_cases(
    cases: Sequence[Case], plan: PreprocessPlan, allow_missing: bool, workers: int, pin: bool, on_device: bool
) -> Iterator[PreparedCase | Exception]:
    """The cases in order, each read and preprocessed (only read when the device preprocesses: `on_device`) by
    `workers` processes (at most READ_AHEAD per worker in flight; in this process when `workers` is 0)."""
    loader = DataLoader(
        _Reader(cases, plan, allow_missing, on_device),
        batch_size=None,
        num_workers=workers,
        collate_fn=_as_is,
        pin_memory=pin and workers > 0,
        prefetch_factor=READ_AHEAD if workers else None,
        multiprocessing_context="fork" if workers else None,
    )
    return iter(loader)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)  # the run was killed (SIGKILL): do not linger as an orphan


def _writer_init(parent: int) -> None:
    for sig in (signal.SIGINT, signal.SIGHUP):  # Ctrl-C and a closed terminal reach the whole group: main decides
        signal.signal(sig, signal.SIG_IGN)
    torch.set_num_threads(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


@contextlib.contextmanager
def writer_pool(workers: int) -> Iterator[Executor]:
    """Processes that finish and write cases (a thread when `workers` is 0). On an error or interruption, writes
    not yet started are cancelled and those under way complete."""
    n = writer_count(workers)
    pool: Executor = (
        ProcessPoolExecutor(
            n,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_writer_init,
            initargs=(os.getpid(),),
        )
        if n
        else ThreadPoolExecutor(1, thread_name_prefix="write")
    )
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
