"""The `openai` model backend: frames go as base64 images to the site's own OpenAI-compatible server."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from protocols.errors import ConfigError, ModelError
from site_node.home import SiteConfig
from site_node.model.pipeline import EvalRequest
from site_node.model.prefetch import VideoJob
from site_node.task_runtime import Answer

# Fields where a server with a reasoning parser puts the text inside <think>...</think>: `transformers serve`
# does so for Qwen models, always, in reasoning_content; other servers name the field reasoning_content or reasoning.
_REASONING_FIELDS = ("reasoning_content", "reasoning")


@dataclass(frozen=True)
class InputSize:
    """Qwen2.5-VL's resize rule (smart_resize) with the model directory's image-processor settings."""

    factor: int
    min_pixels: int
    max_pixels: int

    @classmethod
    def of(cls, model_dir: Path) -> InputSize:
        from site_node.model.loading import load_processor

        proc = load_processor(model_dir).image_processor
        size = proc.size
        return cls(int(proc.patch_size) * int(proc.merge_size), int(size["shortest_edge"]), int(size["longest_edge"]))

    def __call__(self, image: Image.Image) -> tuple[int, int]:
        """(width, height) the server's processor resizes the frame to: box answers are in these pixels."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        h, w = smart_resize(image.height, image.width, self.factor, self.min_pixels, self.max_pixels)
        return int(w), int(h)


@dataclass
class OpenAIModel:
    """A served model: chat completions at `endpoint` (…/v1) for model `name`; `path` is the same weights on disk
    (hash-checked against the protocol, and the source of the resize rule)."""

    endpoint: str
    name: str
    path: Path
    timeout_s: float = 600.0
    _size: InputSize | None = field(default=None, repr=False)

    def input_size(self) -> InputSize:
        """The resize rule, read from the model directory once (before requests run in threads)."""
        if self._size is None:
            self._size = InputSize.of(self.path)
        return self._size

    def client(self) -> httpx.Client:
        # trust_env=False: frames go to the configured endpoint only, never through a proxy from the environment.
        return httpx.Client(base_url=self.endpoint.rstrip("/"), timeout=self.timeout_s, trust_env=False)


def image_url(image: Image.Image) -> str:
    """The frame as a lossless PNG data URL, so the server sees the pixels the local path would."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def chat_body(model: str, image: Image.Image, prompt: str, max_tokens: int) -> dict[str, Any]:
    """One user turn, the image first, then the question (as `generate.chat_messages`); greedy decoding."""
    content = [{"type": "image_url", "image_url": {"url": image_url(image)}}, {"type": "text", "text": prompt}]
    return {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": max_tokens,
    }


def answer_text(reply: dict[str, Any]) -> str:
    """The generated text; a reasoning part the server split off is put back in its <think> tags."""
    try:
        choice = reply["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError) as exc:
        raise ModelError(f"the model server's reply has no choices[0].message: {str(reply)[:200]}") from exc
    content = message.get("content") or ""
    reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k)), None)
    if reasoning is None:
        return str(content).strip()
    closed = content or choice.get("finish_reason") != "length"  # cut off inside the reasoning: no closing tag
    return f"<think>{reasoning}{'</think>' if closed else ''}{content}".strip()


def ask(model: OpenAIModel, client: httpx.Client, image: Image.Image, req: EvalRequest, size: InputSize) -> Answer:
    """One frame's answer; no candidate scores (chat completions return no prompt log-probabilities)."""
    body = chat_body(model.name, image, req.prompt, req.max_new_tokens)
    try:
        resp = client.post("/chat/completions", json=body)
    except httpx.HTTPError as exc:
        raise ModelError(f"model server {model.endpoint}: {type(exc).__name__}: {exc}") from exc
    if resp.status_code != 200:
        raise ModelError(f"model server {model.endpoint} answered HTTP {resp.status_code}: {resp.text[:300]}")
    return Answer(answer_text(resp.json()), None, size(image))


def answer_videos(model: OpenAIModel, jobs: Sequence[VideoJob], req: EvalRequest) -> Iterator[tuple[int, int, Answer]]:
    """(video index, frame, answer) for every job's frames in order; `req.batch_size` requests in flight, so a
    serving engine can batch them (continuous batching)."""
    from site_node.datasets.frames import iter_frames

    def frames() -> Iterator[tuple[int, int, Image.Image]]:
        for k, job in enumerate(jobs):
            for frame, image in iter_frames(job.media, job.labels, list(job.frames), job.fps):
                yield k, frame, image

    size = model.input_size()
    with model.client() as client, ThreadPoolExecutor(max_workers=req.batch_size) as pool:

        def one(image: Image.Image) -> Answer:
            return ask(model, client, image, req, size)

        chunk: list[tuple[int, int, Image.Image]] = []
        for item in frames():
            chunk.append(item)
            if len(chunk) == req.batch_size:
                yield from _answer_chunk(pool, chunk, one, req)
                chunk = []
        yield from _answer_chunk(pool, chunk, one, req)


def _answer_chunk(
    pool: ThreadPoolExecutor,
    chunk: list[tuple[int, int, Image.Image]],
    ask_one: Callable[[Image.Image], Answer],
    req: EvalRequest,
) -> Iterator[tuple[int, int, Answer]]:
    """One chunk's answers, asked concurrently and returned in the chunk's order."""
    answers = list(pool.map(ask_one, [image for *_, image in chunk]))
    req.timing.frames += len(chunk)
    for (k, frame, _), answer in zip(chunk, answers, strict=True):
        yield k, frame, answer


def listed_models(model: OpenAIModel, timeout_s: float = 5.0) -> list[str]:
    """The model names the server lists at GET /models; ModelError naming the endpoint when it does not answer."""
    try:
        with httpx.Client(base_url=model.endpoint.rstrip("/"), timeout=timeout_s, trust_env=False) as client:
            resp = client.get("/models")
        resp.raise_for_status()
        return [str(m["id"]) for m in resp.json()["data"]]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"model server {model.endpoint}: {type(exc).__name__}: {exc}") from exc


def served_model(config: SiteConfig, model_dir: Path) -> OpenAIModel:
    """The openai backend of a site configured with it; `model_dir` holds the weights the server was started on."""
    if config.endpoint is None:
        raise ConfigError('[model] backend = "openai" needs [model] endpoint, e.g. "http://127.0.0.1:8000/v1"')
    return OpenAIModel(config.endpoint, config.served_model or str(model_dir), Path(model_dir))
