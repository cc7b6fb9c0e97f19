"""The README's manual path, run exactly as written: hub init, serve, sites add; site init, ingest, approve,
serve; hub launch, report. Only the placeholders the README names are replaced."""

from __future__ import annotations

import csv
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from protocols.procs import Child, free_port, port_open, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
START, END = "<!-- manual-path:start -->", "<!-- manual-path:end -->"
ACTIVATE = ["source", ".venv/bin/activate"]
EDIT = "# edit study.yaml:"
PROGRAMS = {"hub", "site_node", "cp"}
# The placeholders the README lists above the block, in the order they are replaced (ports before paths, so a
# digit run inside a temporary path is never taken for a port).
PLACEHOLDERS = (
    "hub.example.org",
    "9092",
    "9093",
    "/srv/hub",
    "/srv/site",
    "/models/surg-r1",
    "/data/cholec80",
    "hospital-profile.yaml",
)
# Whole arguments replaced by a path in the test's folder (the README runs from the repository).
REPORT_DIR, STUDY = "report/", "study.yaml"


def manual_path(readme: str) -> list[str]:
    """The block's lines, continuations joined, blank lines dropped (comments kept: the edit step is one)."""
    assert readme.count(START) == 1 and readme.count(END) == 1, "the README marks exactly one manual path"
    block = readme.split(START, 1)[1].split(END, 1)[0]
    fenced = re.fullmatch(r"\s*```bash\n(.*)```\s*", block, flags=re.S)
    assert fenced, "the manual path is one ```bash fenced block"
    lines = fenced.group(1).replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines if line.strip()]


@dataclass
class Step:
    line: str  # as the README shows it
    argv: list[str]
    background: bool


def parse(line: str, values: dict[str, str]) -> Step:
    """One README command with the placeholders replaced; `&` at the end runs it in the background."""
    argv = shlex.split(line, comments=True)
    background = bool(argv) and argv[-1] == "&"
    argv = argv[:-1] if background else argv
    assert argv and argv[0] in PROGRAMS, f"unexpected command in the manual path: {line!r}"
    out = []
    for token in argv:
        if token in (REPORT_DIR, STUDY):
            token = values[token]
        for placeholder in PLACEHOLDERS:
            token = token.replace(placeholder, values[placeholder])
        out.append(token)
    return Step(line, out, background)


def apply_edit(instruction: str, study: Path, model_hash: str) -> None:
    """Do what the README's edit line says: the roster, the model hash just printed, the one task kept."""
    sites = re.search(r"sites: \[([^\]]*)\]", instruction)
    keep = re.search(r"tasks: keep (\w+) only", instruction)
    assert sites and keep and "model.manifest_sha256: the hash printed above" in instruction, instruction
    protocol = yaml.safe_load(study.read_text())
    protocol["sites"] = [s.strip() for s in sites.group(1).split(",")]
    protocol["model"]["manifest_sha256"] = model_hash
    protocol["tasks"] = [t for t in protocol["tasks"] if t["name"] == keep.group(1)]
    assert protocol["tasks"], f"the protocol has no task {keep.group(1)!r}"
    study.write_text(yaml.safe_dump(protocol, sort_keys=False))


def test_the_block_names_every_placeholder_and_only_known_commands() -> None:
    lines = manual_path((REPO / "README.md").read_text())
    text = "\n".join(lines)
    for placeholder in (*PLACEHOLDERS, REPORT_DIR, STUDY):
        assert placeholder in text, f"placeholder {placeholder} is no longer in the README's manual path"
    assert shlex.split(lines[0], comments=True) == ACTIVATE
    assert sum(line.startswith(EDIT) for line in lines) == 1
    commands = [parse(line, {p: p for p in (*PLACEHOLDERS, REPORT_DIR, STUDY)}) for line in lines[1:] if line[0] != "#"]
    shown = [" ".join(s.argv[:2]) for s in commands]
    for needed in ("hub init", "hub serve", "hub sites", "site_node init", "site_node ingest", "site_node protocols"):
        assert needed in shown, needed
    assert shown[-2:] == ["hub launch", "hub report"]
    assert [s.argv[1] for s in commands if s.background] == ["serve", "serve"]


def _env(run: Path, venv_bin: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(run / "flwr"),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS="1",
    )
    if venv_bin is not None:  # what `source .venv/bin/activate` does to the shell
        env["PATH"] = os.pathsep.join([str(venv_bin), env.get("PATH", "")])
        env["VIRTUAL_ENV"] = str(venv_bin.parent)
    return env


def _run(argv: list[str], env: dict[str, str], timeout: float, children: list[Child]) -> str:
    """Run one command where the README runs it: in the repository."""
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        logs = "\n".join(f"--- {c.name}:\n{c.tail(40)}" for c in children)
        pytest.fail(f"{shlex.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}\n{logs}")
    print(f"$ {shlex.join(argv)}\n{done.stdout}{done.stderr}")  # shown by pytest when a later step fails
    return done.stdout


def _listening(*ports: int) -> bool:
    return all(port_open("127.0.0.1", port) for port in ports)


def test_readme_manual_path_runs(tmp_path: Path, tiny_model_dir: Path) -> None:
    run = tmp_path
    public, internal = free_port(), free_port()
    values = {
        "hub.example.org": "127.0.0.1",
        "9092": str(public),
        "9093": str(internal),
        "/srv/hub": str(run / "hub"),
        "/srv/site": str(run / "site"),
        "/models/surg-r1": str(tiny_model_dir),
        "/data/cholec80": str(run / "raw" / "cholec80"),
        "hospital-profile.yaml": "demo",  # synthetic footage comes from no real recorder
        REPORT_DIR: str(run / "report"),
        STUDY: str(run / "study.yaml"),
    }
    env = _env(run, None)
    # The data: five short synthetic videos (at least the protocol's privacy.min_videos) from `site_node synth`.
    synth = [sys.executable, "-m", "site_node.cli", "synth", "--site", "hospital-a", "--out", str(run / "raw")]
    _run([*synth, "--videos", "5", "--seconds", "12"], env, 300, [])

    children: list[Child] = []
    outputs: dict[str, str] = {}
    model_hash = ""
    try:
        for line in manual_path((REPO / "README.md").read_text()):
            if shlex.split(line, comments=True) == ACTIVATE:
                env = _env(run, Path(sys.executable).parent)
                continue
            if line.startswith(EDIT):
                apply_edit(line, run / "study.yaml", model_hash)
                continue
            if line.startswith("#"):
                continue
            step = parse(line, values)
            if step.background:
                name = " ".join(step.argv[:2])
                log_file = run / "logs" / f"{step.argv[0]}-{len(children)}.log"
                children.append(Child(name, step.argv, log_file, env=env, cwd=REPO))
                if step.argv[0] == "hub":  # the next commands talk to it: wait until both ports listen
                    wait_for(lambda: _listening(public, internal), 120, "the hub to listen", children[-1])
                continue
            timeout = 1200 if step.argv[:2] == ["hub", "launch"] else 300
            outputs[" ".join(step.argv[:2])] = out = _run(step.argv, env, timeout, children)
            if step.argv[:3] == ["site_node", "model", "hash"]:
                model_hash = out.strip().splitlines()[-1]
    finally:
        for child in reversed(children):
            child.stop()
    assert all(not c.alive() for c in children)

    launched = outputs["hub launch"]
    assert "study surgbench-external" in launched, launched
    assert f"hub report --study surgbench-external --out REPORT_DIR --home {run / 'hub'}" in launched, launched
    assert "hospital-a: stored" in launched, launched
    with (run / "report" / "per_center.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["center"] == "hospital-a"]
    assert {r["task"] for r in rows} == {"phase"}
    accuracy = [r for r in rows if r["metric"] == "accuracy"]
    assert len(accuracy) == 1 and 0.0 <= float(accuracy[0]["estimate"]) <= 1.0, accuracy
    assert accuracy[0]["suppressed"] in ("False", "false", "0"), accuracy
    assert str(run / "report" / "report.html") in outputs["hub report"]
