"""Resume at video granularity: a video's answers reach the predictions file whole, then the video is marked done."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from site_node.scoring import Record, read_predictions

VideoKey = tuple[str, str, str]  # task, dataset, video


def done_file(predictions: Path) -> Path:
    """The checkpoint beside a predictions file: one JSON line per finished (task, dataset, video)."""
    return predictions.with_name(predictions.name + ".done")


class VideoCheckpoint:
    """Finished videos of a job; on resume their answers come back from the predictions file, the rest run again."""

    def __init__(self, predictions: Path) -> None:
        self.predictions = Path(predictions)
        self.done_path = done_file(self.predictions)
        self.done: set[VideoKey] = set()
        if not self.predictions.is_file():  # marks without their answers mean nothing: start afresh
            self.done_path.unlink(missing_ok=True)
        if self.done_path.is_file():
            for line in self.done_path.read_text(encoding="utf-8").splitlines():
                try:
                    task, dataset, video = json.loads(line)
                except (json.JSONDecodeError, ValueError, TypeError):
                    continue  # a line torn by a crash: that video was not marked, it runs again
                self.done.add((str(task), str(dataset), str(video)))
        self._drop_unfinished()

    def _drop_unfinished(self) -> None:
        """Answers of videos never marked done (a crash between writing and marking) are removed, not duplicated."""
        if not self.predictions.is_file():
            return
        records, _ = read_predictions(self.predictions)
        keep = [r for r in records if (r.task or "", r.dataset or "", r.video) in self.done]
        if len(keep) == len(records):
            return
        tmp = self.predictions.with_name(self.predictions.name + ".tmp")
        tmp.write_text("".join(json.dumps(r.to_json()) + "\n" for r in keep), encoding="utf-8")
        os.replace(tmp, self.predictions)

    def finished(self, task: str) -> dict[tuple[str, str], list[Record]]:
        """(dataset, video) -> its saved records, for the task's finished videos."""
        out: dict[tuple[str, str], list[Record]] = {k[1:]: [] for k in self.done if k[0] == task}
        if self.predictions.is_file():
            records, _ = read_predictions(self.predictions)
            for r in records:
                if r.task == task and (r.dataset or "", r.video) in out:
                    out[(r.dataset or "", r.video)].append(r)
        return out

    def commit(self, task: str, dataset: str, video: str, records: Sequence[Record]) -> None:
        """Append a finished video's answers, flush them to disk, then mark the video done."""
        self.predictions.parent.mkdir(parents=True, exist_ok=True)
        with self.predictions.open("a", encoding="utf-8") as out:
            out.write("".join(json.dumps(r.to_json()) + "\n" for r in records))
            out.flush()
            os.fsync(out.fileno())
        with self.done_path.open("a", encoding="utf-8") as marks:
            marks.write(json.dumps([task, dataset, video]) + "\n")
            marks.flush()
            os.fsync(marks.fileno())
        self.done.add((task, dataset, video))
