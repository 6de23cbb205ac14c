"""The deployment files, checked without Docker (the image cannot be built here): what the
Dockerfile, docker-compose.yml and the macOS runner files run matches the Makefile's
commands and the worker's own CLI, and the Space front matter matches the image."""

from __future__ import annotations

import json
import plistlib
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from worker import settings
from worker.runner import build_parser

ROOT = Path(__file__).resolve().parent.parent
REQUIRED_SCOPES = {"read-repos", "manage-repos", "write-discussions"}


# ---------------------------------------------------------------------- parsing


def makefile_recipe(target: str) -> list[list[str]]:
    """The commands of a Makefile target, with $(BIN)/ and $(VENV)/bin/ dropped (the venv's
    python is `python` in the image)."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"^{re.escape(target)}\s*:", line))
    commands = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        command = line.strip().lstrip("@-")
        command = command.replace("$(BIN)/", "").replace("$(VENV)/bin/", "")
        commands.append(shlex.split(command))
    return commands


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        logical.append(current.strip())
        current = ""
    return [(item.split(None, 1)[0].upper(), item.split(None, 1)[1] if " " in item else "") for item in logical]


def docker_env() -> dict[str, str]:
    env = {}
    for instruction, args in dockerfile():
        if instruction == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def front_matter() -> dict:
    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n"), "README.md must start with the Space's YAML front matter"
    return yaml.safe_load(text.split("---\n", 2)[1])


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def worker_args(command: list[str]):
    assert command[:3] == ["python", "-m", "worker"], command
    args = build_parser().parse_args(command[3:])
    return [q for q in args.queues.split(",") if q]


# ---------------------------------------------------------------------- Dockerfile


def test_the_image_runs_what_make_run_runs():
    (run,) = [c for c in makefile_recipe("run")]
    cmd = [json.loads(args) for instruction, args in dockerfile() if instruction == "CMD"]
    assert cmd == [run] == [["python", "app.py"]]


def test_the_image_is_a_docker_space():
    instructions = dockerfile()
    env = docker_env()
    assert any(i == "RUN" and "useradd" in a and "-u 1000" in a for i, a in instructions), "Spaces run as UID 1000"
    users = [a for i, a in instructions if i == "USER"]
    assert users and users[-1] == "user"
    assert env["SYSTEM"] == "spaces" and env["GRADIO_SERVER_NAME"] == "0.0.0.0"
    assert [a for i, a in instructions if i == "EXPOSE"] == [env["GRADIO_SERVER_PORT"]]
    assert all("--chown=user" in a for i, a in instructions if i == "COPY")
    # app.py without REDIS_URL starts its own redis-server: the image must have one.
    assert any(i == "RUN" and "apt-get install" in a and "redis-server" in a for i, a in instructions)


def test_the_image_installs_the_pinned_toolchain_like_the_makefile():
    pins = set(re.findall(r"torch==[\d.]+", (ROOT / "Makefile").read_text()))
    runs = " ".join(a for i, a in dockerfile() if i == "RUN")
    assert pins and pins <= set(re.findall(r"torch==[\d.]+", runs))
    assert "download.pytorch.org/whl/cpu" in runs, "the CPU wheel: the default pulls CUDA"
    assert "-r requirements.txt" in runs


def test_the_build_context_leaves_local_state_out():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "state", ".git"} <= set(ignored)


# ---------------------------------------------------------------------- Space front matter


def test_the_space_front_matter_matches_the_image():
    meta = front_matter()
    assert meta["sdk"] == "docker"
    assert meta["app_port"] == 7860 == int(docker_env()["GRADIO_SERVER_PORT"])
    assert meta["hf_oauth"] is True
    assert REQUIRED_SCOPES <= set(meta["hf_oauth_scopes"]), "creating repos and opening PRs needs these scopes"
    assert len(meta.get("short_description", "")) <= 60


# ---------------------------------------------------------------------- docker compose


def test_compose_runs_redis_the_app_and_workers():
    services = compose()["services"]
    assert set(services) >= {"redis", "app", "worker"}
    (run,) = makefile_recipe("run")
    assert services["app"]["command"] == run
    queues = worker_args(services["worker"]["command"])
    assert queues and set(queues) <= set(settings.QUEUES) and settings.MACOS_QUEUE not in queues
    assert services["worker"]["deploy"]["replicas"]


def test_compose_redis_is_persistent_and_password_protected():
    config = compose()
    redis = config["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--requirepass" in command
    assert any(v.split(":")[0] in config["volumes"] and v.endswith(":/data") for v in redis["volumes"])
    published = [p for p in redis.get("ports", [])]
    assert all(p.startswith("${REDIS_BIND:-127.0.0.1}") for p in published), "Redis must not be public by default"


def test_compose_app_and_workers_share_the_queue_and_the_token_key():
    services = compose()["services"]
    app, worker = services["app"]["environment"], services["worker"]["environment"]
    for key in ("REDIS_URL", "COREML_CONVERTER_SECRET_KEY", "HF_ENDPOINT"):
        assert app[key] == worker[key], key
    assert "@redis:6379/" in app["REDIS_URL"]
    assert app["SYSTEM"] != "spaces", "self-hosting signs in with a token"
    assert app["GRADIO_SERVER_NAME"] == "0.0.0.0"
    assert any(p.endswith(f":{app['GRADIO_SERVER_PORT']}") for p in services["app"]["ports"])


def test_compose_app_and_workers_share_the_state_folder():
    """A package kept after a refused push is written by a worker and served by the app."""
    services = compose()["services"]
    state = re.search(r"COREML_CONVERTER_STATE_DIR=(\S+)", (ROOT / "Dockerfile").read_text()).group(1)
    mounts = [{m.split(":")[0] for m in services[name]["volumes"] if m.split(":")[1] == state} for name in ("app", "worker")]
    assert mounts[0] and mounts[0] == mounts[1] and next(iter(mounts[0])) in compose()["volumes"]


def test_the_compose_env_example_names_every_required_variable():
    required = set(re.findall(r"\$\{(\w+):\?", (ROOT / "docker-compose.yml").read_text()))
    example = (ROOT / "deploy" / "compose.env.example").read_text()
    defined = set(re.findall(r"^(\w+)=", example, flags=re.M))
    assert required and required <= defined


# ---------------------------------------------------------------------- macOS runners


def test_the_mac_runner_script_starts_a_macos_worker():
    script = ROOT / "deploy" / "macos" / "run-worker.sh"
    assert script.stat().st_mode & 0o111, "run-worker.sh must be executable"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    exec_line = re.search(r"^exec (.+?)(?<!\\)$", text.replace("\\\n", " "), flags=re.M).group(1)
    words = shlex.split(exec_line.replace('"$@"', ""))
    assert words[0] == ".venv/bin/python" and words[1:3] == ["-m", "worker"]
    queues_default = re.search(r"\$\{QUEUES:-([\w,]+)\}", text).group(1).split(",")
    assert queues_default[0] == settings.MACOS_QUEUE and set(queues_default) <= set(settings.QUEUES)
    assert "--url" not in words, "the Redis password must not be on the command line"
    parsed = build_parser().parse_args(["--queues", "macos,default", "--name", "mac", "--worker-class", "spawn"])
    assert parsed.worker_class == "spawn"
    assert "torch==2.13.0" in text and "-r requirements.txt" in text


def test_the_launchd_example_runs_the_script():
    plist = plistlib.loads((ROOT / "deploy" / "macos" / "co.huggingface.coreml-converter.worker.plist").read_bytes())
    assert plist["Label"] == "co.huggingface.coreml-converter.worker"
    assert plist["ProgramArguments"][-1].endswith("deploy/macos/run-worker.sh")
    assert plist["RunAtLoad"] is True and plist["KeepAlive"] is True
    assert plist["ExitTimeOut"] >= 60, "launchd must let a running job finish before SIGKILL"


@pytest.mark.parametrize("text", [
    "# Deployment", "## As a Hugging Face Space", "## Self-hosting with Docker Compose", "## Mac runners",
    "80, 443 and 8080", "docker compose up", "deploy/macos/run-worker.sh", "COREML_CONVERTER_USER_ACTIVE_JOBS",
])
def test_the_deployment_guide_explains_deployment(text):
    assert text in (ROOT / "docs" / "deployment.md").read_text()
    assert "[docs/deployment.md](docs/deployment.md)" in (ROOT / "README.md").read_text()  # the README points there
