"""Several devices at one site: one model copy per device, each in its own process; batches shared round-robin."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from protocols.errors import ConfigError, EngineError, SurgFedError
from site_node.model.pipeline import EvalRequest, ModelTime, answer_batch
from site_node.model.prefetch import FrameInput, FramePrefetcher
from site_node.task_runtime import Answer

_POLL_S = 5.0
Answers = list[tuple[int, int, Answer]]


def _device_worker(model_dir: str, device: str, threads: int, tasks: Any, results: Any) -> None:
    """Loads one model copy on `device`, then answers (batch number, batch, request) until it gets None."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    from site_node.model.loading import load_model

    try:
        lm = load_model(Path(model_dir), device=device)
    except SurgFedError as exc:
        results.put((-1, None, f"{device}: {exc}"))
        return
    results.put((-1, None, None))  # loaded
    while (task := tasks.get()) is not None:
        number, batch, req = task
        try:
            results.put((number, answer_batch(lm, batch, req), None))
        except (SurgFedError, RuntimeError, ValueError) as exc:
            results.put((number, None, f"{device}: {type(exc).__name__}: {exc}"))


class DevicePool:
    """Model copies on `devices` (e.g. ["cuda:0", "cuda:1"]); batch k runs on device k mod n.

    The batches are the ones a single device would form, so each frame meets the same computation and the
    results equal one device's; at most two batches per device are in flight, which bounds memory.
    """

    def __init__(self, model_dir: Path, devices: Sequence[str]) -> None:
        if not devices:
            raise ConfigError("[model] devices must name at least one device, got an empty list")
        ctx = mp.get_context("spawn")
        # CPU copies share the cores; GPU copies each get their own device and few CPU threads.
        threads = max(1, (os.cpu_count() or 1) // len(devices))
        self.devices = list(devices)
        self._tasks = [ctx.Queue() for _ in devices]
        self._results = ctx.Queue()
        self._procs = [
            ctx.Process(target=_device_worker, args=(str(model_dir), d, threads, t, self._results), daemon=True)
            for d, t in zip(devices, self._tasks, strict=True)
        ]
        for p in self._procs:
            p.start()
        for _ in self._procs:
            _, _, error = self._get()
            if error:
                self.close()
                raise EngineError(f"a model copy did not load: {error}")

    def _get(self) -> tuple[int, Answers | None, str | None]:
        while True:
            try:
                got: tuple[int, Answers | None, str | None] = self._results.get(timeout=_POLL_S)
                return got
            except queue_mod.Empty:
                dead = [d for d, p in zip(self.devices, self._procs, strict=True) if not p.is_alive()]
                if dead:
                    raise EngineError(f"the model process on {dead[0]} died") from None

    def run(self, batches: Iterable[list[FrameInput]], req: EvalRequest) -> Iterator[Answers]:
        """Each batch's answers, in batch order."""
        if not self._procs:
            raise EngineError("the device pool is closed")
        plain = replace(req, timing=ModelTime())  # the workers' timing stays with them
        n, sent, done, ready = len(self._procs), 0, 0, {}
        pending = iter(batches)
        exhausted = False
        while True:
            while not exhausted and sent - done < 2 * n:
                batch = next(pending, None)
                if batch is None:
                    exhausted = True
                    break
                self._tasks[sent % n].put((sent, batch, plain))
                sent += 1
            if done == sent:
                return
            while done not in ready:
                number, answers, error = self._get()
                if error or answers is None:
                    raise EngineError(f"batch {number} failed: {error}")
                ready[number] = answers
            yield ready.pop(done)
            done += 1

    def close(self) -> None:
        """Stop every model process (each by its own handle)."""
        for t, p in zip(self._tasks, self._procs, strict=True):
            if p.is_alive():
                t.put(None)
        for p in self._procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        self._procs = []

    def __enter__(self) -> DevicePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_helpers(
    model_dir: Path, devices: Sequence[str], frame_workers: int
) -> tuple[FramePrefetcher | None, DevicePool | None]:
    """What a site engine keeps running beside its model: frame workers ([model] frame_workers > 0) and one model
    copy per device ([model] devices with two or more entries)."""
    prefetcher = FramePrefetcher(model_dir, workers=frame_workers) if frame_workers > 0 else None
    try:
        pool = DevicePool(model_dir, devices) if len(devices) > 1 else None
    except SurgFedError:
        if prefetcher:
            prefetcher.close()
        raise
    return prefetcher, pool
