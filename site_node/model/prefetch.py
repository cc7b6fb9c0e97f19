"""Frames decoded and run through the processor ahead of the model, in worker processes, through bounded queues."""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from protocols.errors import ConfigError, DataError, EngineError
from site_node.store import FrameLabels

# How long the consumer waits for a worker before it checks that the worker is still alive.
_POLL_S = 5.0


@dataclass(frozen=True)
class VideoJob:
    """The frames of one video to evaluate (label-file numbering) and where their pixels are."""

    media: Path
    labels: FrameLabels
    frames: tuple[int, ...]
    fps: float


@dataclass
class FrameInput:
    """One frame's processor output (prompt tokens with the image placeholders expanded, patches, grid)."""

    video: int
    frame: int
    input_ids: np.ndarray  # (tokens,)
    mm_token_type_ids: np.ndarray  # (tokens,)
    pixel_values: np.ndarray  # (patches, patch dim)
    grid: np.ndarray  # (3,): t, h, w in patches


def encode_frame(processor: Any, text: str, image: Image.Image, video: int, frame: int) -> FrameInput:
    """The processor's work for one frame (resize, normalise, patching, tokenising), as numpy arrays."""
    enc = processor(text=[text], images=[image.convert("RGB")], return_tensors="np")
    return FrameInput(
        video,
        frame,
        np.asarray(enc["input_ids"][0]),
        np.asarray(enc["mm_token_type_ids"][0]),
        np.asarray(enc["pixel_values"], dtype=np.float32),
        np.asarray(enc["image_grid_thw"][0]),
    )


def produce(processor: Any, text: str, jobs: Sequence[tuple[int, VideoJob]]) -> Iterator[FrameInput | int]:
    """Each job's frames in order, then the job's index as its end marker."""
    from site_node.datasets.frames import iter_frames

    for index, job in jobs:
        for frame, image in iter_frames(job.media, job.labels, list(job.frames), job.fps):
            yield encode_frame(processor, text, image, index, frame)
        yield index


def _worker(model_dir: str, tasks: Any, out: Any) -> None:
    """A worker process: loads the processor once, then serves (text, jobs) requests until it gets None."""
    import torch

    torch.set_num_threads(1)  # the model owns the cores; a worker only decodes and patches
    from site_node.model.loading import load_processor

    processor = load_processor(Path(model_dir))
    while (request := tasks.get()) is not None:
        text, jobs = request
        try:
            for item in produce(processor, text, jobs):
                out.put(item)
        except (DataError, OSError, ValueError) as exc:
            out.put(("error", f"{type(exc).__name__}: {exc}"))


class FramePrefetcher:
    """Worker processes that prepare frames ahead of the model; each worker's queue holds at most `depth` frames.

    Video i goes to worker i mod n and the consumer reads videos in order, so the frames come out in the same
    order (hence the same batches) whatever the workers' speeds, and memory stays bounded by n x depth frames.
    The workers live as long as this object (the site engine keeps one across jobs).
    """

    def __init__(self, model_dir: Path, workers: int = 2, depth: int = 32) -> None:
        if workers < 1 or depth < 1:
            raise ConfigError(f"workers and depth must be >= 1, got workers={workers}, depth={depth}")
        ctx = mp.get_context("spawn")  # fork would copy the model and torch's thread pools
        self._tasks = [ctx.Queue() for _ in range(workers)]
        self._outs = [ctx.Queue(maxsize=depth) for _ in range(workers)]
        self._procs = [
            ctx.Process(target=_worker, args=(str(model_dir), t, o), daemon=True)
            for t, o in zip(self._tasks, self._outs, strict=True)
        ]
        for p in self._procs:
            p.start()
        self.depth = depth
        self._busy = False

    @property
    def workers(self) -> int:
        return len(self._procs)

    def frames(self, text: str, jobs: Sequence[VideoJob]) -> Iterator[FrameInput]:
        """Every job's frames in job order; a worker's decoding error is raised here as a DataError."""
        if self._busy or not self._procs:
            raise EngineError("the frame prefetcher is closed or already serving a task")
        self._busy = True
        n = len(self._procs)
        for w in range(n):
            self._tasks[w].put((text, [(i, j) for i, j in enumerate(jobs) if i % n == w]))
        finished = False
        try:
            for index in range(len(jobs)):
                yield from self._video(index)
            finished = True
        finally:
            self._busy = False
            if not finished:  # abandoned mid-task: the workers' queues hold stale frames
                self.close()

    def _video(self, index: int) -> Iterator[FrameInput]:
        worker = index % len(self._procs)
        while True:
            item = self._get(worker)
            if isinstance(item, tuple):
                raise DataError(item[1])
            if isinstance(item, int):
                if item != index:
                    raise EngineError(f"frame prefetcher out of step: expected video {index}, got the end of {item}")
                return
            yield item

    def _get(self, worker: int) -> Any:
        while True:
            try:
                return self._outs[worker].get(timeout=_POLL_S)
            except queue_mod.Empty:
                if not self._procs[worker].is_alive():
                    raise EngineError(
                        f"frame worker {worker} died (exit code {self._procs[worker].exitcode})"
                    ) from None

    def close(self) -> None:
        """Stop the workers (each by its own handle)."""
        for t, p in zip(self._tasks, self._procs, strict=True):
            if p.is_alive():
                t.put(None)
        for p in self._procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        self._procs, self._tasks, self._outs = [], [], []

    def __enter__(self) -> FramePrefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def frames_inline(processor: Any, text: str, jobs: Sequence[VideoJob]) -> Iterator[FrameInput]:
    """The same frames in the same order, prepared in this process (the unpipelined path)."""
    for item in produce(processor, text, list(enumerate(jobs))):
        if not isinstance(item, int):
            yield item
