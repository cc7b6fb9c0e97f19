"""The openai backend against a real OpenAI-compatible server (`transformers serve`) on the tiny model, on 127.0.0.1."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from protocols.errors import ModelError
from protocols.model_ref import manifest_hash
from protocols.study import TaskPlan
from site_node.doctor import Level, check_model_server
from site_node.evaluation import evaluate_task
from site_node.home import SiteHome, init_home, parse_site_config
from site_node.ingest import ingest
from site_node.local_eval import open_data
from site_node.model.loading import load_model
from site_node.model.openai_backend import OpenAIModel
from site_node.store import DataStore

_MODEL_FILES = (
    "chat_template.jinja",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
)


def served_copy(model_dir: Path, dest: Path) -> Path:
    """The tiny model as `transformers serve` loads it without torchvision: its processor config names the
    image+text processor class, shipped in the folder (trust_remote_code); weights and tokenizer unchanged."""
    dest.mkdir()
    for name in _MODEL_FILES:
        shutil.copy2(model_dir / name, dest / name)
    shutil.copy2(Path(__file__).with_name("served_processor.py"), dest / "processing_imagetext.py")
    config = json.loads((dest / "processor_config.json").read_text())
    config.pop("video_processor", None)
    config["processor_class"] = "ImageTextQwen2_5_VLProcessor"
    config["auto_map"] = {"AutoProcessor": "processing_imagetext.ImageTextQwen2_5_VLProcessor"}
    (dest / "processor_config.json").write_text(json.dumps(config, indent=2))
    return dest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"transformers serve exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=1.0, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"transformers serve not healthy after {timeout_s} s: {log.read_text()[-2000:]}")


class Server:
    """A started `transformers serve`; `model` waits until it answers (the tests do local work meanwhile)."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path, served: Path, weights: Path) -> None:
        self.proc, self.log = proc, log
        self._model = OpenAIModel(f"http://127.0.0.1:{port}/v1", str(served), weights)
        self._ready = False

    @property
    def model(self) -> OpenAIModel:
        if not self._ready:
            _wait_healthy(self.proc, self._model.endpoint.removesuffix("/v1") + "/health", self.log)
            self._ready = True
        return self._model


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`transformers serve` (stock, from the venv) on the tiny model, CPU, 127.0.0.1; stopped after the module."""
    root = tmp_path_factory.mktemp("served")
    served = served_copy(tiny_model_dir, root / "tiny")
    port, log = _free_port(), root / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(root / "modules"), "HF_HOME": str(root)}
    cmd = [str(Path(sys.executable).with_name("transformers")), "serve", str(served), "--device", "cpu"]
    cmd += ["--trust-remote-code", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield Server(proc, port, log, served, tiny_model_dir)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def store(synthetic_site: Path) -> DataStore:
    return open_data(synthetic_site).store


def _answers(outcome: Any) -> dict[tuple[str, str, int], Any]:
    return {(r.dataset, r.video, r.frame): r.answer for r in outcome.records}


def test_served_answers_equal_the_local_path(
    server: Server, store: DataStore, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Greedy answers from the server equal the engine's own, frame for frame; a scored task (cvs) gets no
    candidate scores from chat completions, so its AP is computed on hard predictions and the result says so."""
    # A proxy in the environment must not see the frames: the backend talks to the endpoint only.
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(key, "http://127.0.0.1:9")
    for key in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(key, raising=False)
    plan = TaskPlan("cvs", 4.0, 24)
    kw: dict[str, Any] = {"batch_size": 4, "seed": 5, "replicates": 100}
    local = evaluate_task(load_model(tiny_model_dir, device="cpu"), store, plan, **kw)  # while the server starts
    remote = evaluate_task(server.model, store, plan, **kw)
    got, want = _answers(remote), _answers(local)
    assert sorted(got) == sorted(want) and len(got) >= 4
    for frame, answer in got.items():
        assert answer.text == want[frame].text and answer.size == want[frame].size, frame
        assert answer.logprobs is None
    assert remote.score is not None and local.score is not None
    assert local.score.to_json()["ap_computed_on"] == "candidate scores"
    assert remote.score.to_json()["ap_computed_on"] == "hard predictions"
    assert "map" in local.estimates and "map" not in remote.estimates
    assert all(name.endswith("_hard") for name in remote.estimates if name.startswith("ap"))
    shared = remote.estimates.keys() & local.estimates.keys()
    assert {"accuracy", "balanced_accuracy"} <= shared
    for name in shared:  # metrics of the hard predictions: equal, as the answers are
        a, b = remote.estimates[name].estimate, local.estimates[name].estimate
        assert a == b or math.isnan(a) and math.isnan(b), name
    assert all(est.n_frames == len(got) for est in remote.estimates.values())


def _openai_home(tmp_path: Path, synthetic_site: Path, tiny_model_dir: Path, server: Server) -> SiteHome:
    home = SiteHome(init_home(tmp_path / "site", "a", model_dir=tiny_model_dir, release="manual").root)
    text = home.config_file.read_text()
    model = server.model
    served = f'backend = "openai"\nendpoint = "{model.endpoint}"\nserved_model = "{model.name}"\n'
    home.config_file.write_text(text.replace('backend = "hf"\n', served))
    ingest(home, synthetic_site / "cholec80", "cholec80", out_of_body="none", profile="demo")
    return home


def _run_job(engine: Any, protocol_hash: str) -> str:
    """Submit one evaluation job as the hub would, run it, and return the state it ends in."""

    def request(op: str, values: dict[str, Any]) -> dict[str, Any]:
        records = {"job": {"kind": "config", "values": values}}
        reply: dict[str, Any] = engine.handle({"token": engine.home.token(), "op": op, "records": records})
        assert reply["ok"], reply
        return dict(reply["records"]["job"]["values"])

    job = {"job-id": "servedjob", "kind": "evaluate", "study": "served", "round": 0}
    assert request("submit", {**job, "protocol-hash": protocol_hash, "contract-version": 2})["state"] == "queued"
    engine.start()
    deadline = time.monotonic() + 120
    while (state := request("status", {"job-id": "servedjob"})["state"]) in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    engine.stop()
    return str(state)


def test_site_node_evaluate_and_the_engine_use_the_server(
    server: Server, tmp_path: Path, synthetic_site: Path, tiny_model_dir: Path
) -> None:
    """site.toml [model] backend = "openai": the dry run and a study job both go to the server."""
    from protocols.study import load_protocol
    from site_node.approvals import approve
    from site_node.cli import main
    from site_node.engine import SiteEngine

    home = _openai_home(tmp_path, synthetic_site, tiny_model_dir, server)
    doctor = check_model_server(home.config())
    assert (doctor.level, doctor.detail) == (Level.OK, f"{server.model.endpoint} serves {server.model.name!r}")
    protocol = {
        "study": {"id": "served", "version": "1"},
        "sites": ["a"],
        "model": {"manifest_sha256": manifest_hash(tiny_model_dir)},
        "tasks": [{"name": "phase", "sample_every_s": 4.0, "max_new_tokens": 24}],
        "round_plan": {"rounds": 1},
        "privacy": {"min_videos": 1},
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(protocol))
    out = tmp_path / "dry"
    args = ["evaluate", "--home", str(home.root), "--protocol", str(path), "--data", str(home.root)]
    assert main([*args, "--out", str(out)]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["model"]["served_at"] == server.model.endpoint and summary["tasks"]["phase"]["n_frames"] >= 4
    assert summary["tasks"]["phase"]["parse_fail_rate"] == 0

    approve(home.approved_dir, path)
    engine = SiteEngine(home)
    assert isinstance(engine.model, OpenAIModel) and engine.model.endpoint == server.model.endpoint
    assert _run_job(engine, load_protocol(path).content_hash) == "awaiting_approval", engine.jobs.get("servedjob")
    rows = [
        json.loads(line) for line in (engine.jobs.work_dir("servedjob") / "predictions.jsonl").read_text().splitlines()
    ]
    dry = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["answer"] for r in rows] == [r["answer"] for r in dry] and rows


def test_a_server_that_does_not_answer_is_named(store: DataStore, tiny_model_dir: Path) -> None:
    """No server at the endpoint: the job fails naming it, and `site_node doctor` says so before any job."""
    down = OpenAIModel(f"http://127.0.0.1:{_free_port()}/v1", "tiny", tiny_model_dir, timeout_s=5.0)
    with pytest.raises(ModelError, match=rf"model server {down.endpoint}: ConnectError"):
        evaluate_task(down, store, TaskPlan("phase", 4.0, 8), batch_size=2, seed=1, replicates=10)
    model = {"dir": str(tiny_model_dir), "backend": "openai", "endpoint": down.endpoint}
    doctor = check_model_server(parse_site_config({"site": {"name": "a"}, "model": model}, Path("site.toml")))
    assert doctor.level is Level.FAIL and down.endpoint in doctor.detail and "start the model server" in doctor.fix
