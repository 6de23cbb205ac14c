"""The web UI in a real browser: Debian's chromium, driven by Playwright, against app.py
running as `make run` runs it, with a real redis-server, a real worker process and the
local Hub (tests/e2e fixtures). Each test ends with a screenshot of what the person sees,
saved under the test's tmp dir and copied to tests/screenshots/.

Covered: sign in with a token (and a rejected one), search suggestions, a model's tasks
with its own preselected, the Size choice with each choice's expected size, submit, the stages advancing, the validation table, the link
to the pushed repo (fetched back from the Hub), the package as a zip, "My jobs", an
unsupported model's message, a failed job's reason and pre-filled report link, cancel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from tests.conftest import OTHER, OWNER, OWNER_TOKEN
from tests.e2e import repos
from tests.e2e.harness import free_port, wait_until, worker_env
from tests.e2e.service import JobService

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOTS = ROOT / "tests" / "screenshots"
REPORT_URL = "https://github.com/example/coreml-converter/issues/new"
TIMEOUT_MS = 20_000
JOB_TIMEOUT_S = 120
ENDED = ("finished", "failed", "cancelled")


# ---------------------------------------------------------------------- the running service


@pytest.fixture(scope="module")
def service(worker_repos, tmp_path_factory):
    service = JobService(tmp_path_factory.mktemp("browser-jobs"), worker_repos).start()
    service.add_worker("browser-worker")
    yield service
    service.stop()


@pytest.fixture(scope="module")
def app_url(service, tmp_path_factory):
    """app.py in a subprocess on a free port, using the test Redis and the local Hub."""
    tmp = tmp_path_factory.mktemp("browser-app")
    port = free_port()
    env = worker_env(service.settings)
    env.update(
        REDIS_URL=service.redis.url,
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(port),
        GRADIO_ANALYTICS_ENABLED="False",
        GRADIO_TEMP_DIR=str(tmp / "gradio"),
        COREML_CONVERTER_POLL_SECONDS="0.3",
        COREML_CONVERTER_REPORT_URL=REPORT_URL,
    )
    env.pop("SYSTEM", None)
    log_path = tmp / "app.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"

    def up():
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited ({process.returncode}):\n{log_path.read_text()[-3000:]}")
        try:
            return urllib.request.urlopen(url, timeout=2).status == 200
        except OSError:
            return False

    try:
        wait_until(up, 90, interval=0.2, what="app.py")
        service.workers[0].wait_ready()
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        app_log = log_path.read_text(errors="replace")
        assert OWNER_TOKEN not in app_log and repos.OWNER_READ_TOKEN not in app_log, "a token reached the app's log"


@pytest.fixture(scope="module")
def browser_context(app_url, tmp_path_factory):
    if not Path(CHROMIUM).exists():
        # `make test` installs it; a run without the browser tests must not look green.
        pytest.fail(f"{CHROMIUM} is missing: run `make test`, or apt-get install chromium")
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900}, accept_downloads=True)
        context.set_default_timeout(TIMEOUT_MS)
        yield context
        context.close()


@pytest.fixture
def page(browser_context, app_url):
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(app_url, wait_until="domcontentloaded")
    page.wait_for_selector("#token input")
    yield page
    page.evaluate("() => localStorage.clear()")  # each test starts signed out (a sign-in is remembered)
    page.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SCREENSHOTS / path.name)
    return path


# ---------------------------------------------------------------------- page actions


def sign_in(page, token: str = OWNER_TOKEN) -> None:
    page.fill("#token input", token)
    page.click("#sign-in")


def choose_model(page, model: str) -> None:
    field = page.locator("#model input")
    field.fill(model)
    field.press("Enter")
    # This model's summary (a previous model's may still be shown while it is read).
    page.wait_for_selector(f'#model-summary [data-model-ok][data-model="{model}"]')
    page.wait_for_timeout(300)  # the task choices arrive with the summary; let the form settle before clicking


def set_options(page, sequence_length: str = "8") -> None:
    """Open the options and type a sequence length (again if the accordion, still mounting
    its contents, reset the field: a person is never that quick)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.click("#options")
    field = page.locator("#sequence-length textarea, #sequence-length input").first
    field.wait_for(state="visible")
    note = f"exactly {sequence_length} tokens"
    for _attempt in range(5):
        field.fill(sequence_length)
        field.press("Tab")
        try:
            page.wait_for_function(
                "note => document.querySelector('#sequence-note')?.innerText.includes(note)", arg=note, timeout=3000)
        except PlaywrightTimeout:
            continue
        page.wait_for_timeout(300)
        if field.input_value() == sequence_length and note in page.inner_text("#sequence-note"):
            return
    raise AssertionError(f"the sequence length field did not keep {sequence_length!r}")


def start_job(page, model: str) -> None:
    """Sign in, pick `model` with 8 tokens and press Convert."""
    sign_in(page)
    page.wait_for_selector("[data-signed-in=yes]")
    choose_model(page, model)
    set_options(page, "8")
    submit(page)


def submit(page) -> None:
    page.click("#convert")
    page.wait_for_selector("#job-status [data-state]")


def job_state(page) -> tuple[str, str]:
    element = page.query_selector("#job-status [data-state]")
    if element is None:
        return "", ""
    return element.get_attribute("data-state"), element.get_attribute("data-stage")


def watch_job(page, until=ENDED, timeout: float = JOB_TIMEOUT_S) -> list[tuple[str, str]]:
    """The (state, stage) pairs the job view showed, in order, until the state is in `until`."""
    seen: list[tuple[str, str]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = job_state(page)
        if current[0] and (not seen or seen[-1] != current):
            seen.append(current)
        if current[0] in until:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"the job view never reached {until}; it showed {seen}")


def page_text(page) -> str:
    """The page as rendered plus everything it keeps in browser storage."""
    storage = page.evaluate("() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])")
    return page.content() + storage


# ---------------------------------------------------------------------- tests


def test_convert_a_tiny_model_and_get_the_pushed_package(page, service, tmp_path):
    hub = service.hub
    target = f"{OWNER}/browser-bert-coreml"

    sign_in(page)
    page.wait_for_selector("[data-signed-in=yes]")
    assert "Signed in as alice" in page.inner_text("#user")
    assert not page.locator("#token").is_visible(), "the token field stays on the page after signing in"

    # Suggestions come from the (local) Hub while typing.
    field = page.locator("#model input")
    field.click()
    field.press_sequentially("job-b", delay=40)
    page.wait_for_selector(f"ul[role=listbox] >> text={repos.TINY}")
    choose_model(page, repos.TINY)
    summary = page.inner_text("#model-summary")
    assert "bert" in summary and "parameters" in summary and "fill-mask" in summary
    tasks = page.locator("#task label").all_inner_texts()
    assert any(t.startswith("fill-mask") and "the model's own task" in t for t in tasks), tasks
    assert page.locator("#task input[value=fill-mask]").is_checked()
    # The Size choice, under the task: each choice with the package size it gives this model,
    # and those the default target (iOS17) cannot run say what they need.
    page.wait_for_function("() => document.querySelector('#quantize')?.innerText.includes(' MB')")
    sizes = page.locator("#quantize label").all_inner_texts()
    assert len(sizes) == 7 and all(" · about " in t and " MB" in t for t in sizes), sizes
    assert sizes[0].startswith("Full (float16)") and any(t.startswith("4-bit (int4)") and t.endswith("needs iOS18") for t in sizes)
    assert page.locator("#quantize input[value=none]").is_checked()

    set_options(page, "8")
    page.fill("#push-repo textarea, #push-repo input", target)
    submit(page)
    # The job view, below the form, is brought into sight.
    page.wait_for_function("""() => { const r = document.querySelector('#job').getBoundingClientRect();
        return r.top >= -1 && r.top < window.innerHeight * 0.8; }""")
    assert page.locator("[id=job]").count() == 1
    seen = watch_job(page)
    print("job view showed:", seen)
    stages = [stage for _, stage in seen]
    assert seen[-1] == ("finished", "done"), seen
    order = ["queued", "resolve", "download", "convert", "validate", "package", "push", "cleanup", "done"]
    assert stages == sorted(stages, key=order.index), f"stages went backwards: {stages}"
    assert len(set(stages)) >= 3, f"the view did not show the stages advancing: {stages}"

    results = page.locator("#job-results")
    results.locator("[data-role=validation-table]").wait_for()
    rows = results.locator("[data-role=validation-table] tbody tr")
    assert rows.count() >= 4
    assert results.locator("[data-role=validation-table] tr[data-passed=no]").count() == 0
    table = results.locator("[data-role=validation-table]").inner_text()
    assert "max abs difference" in table and "PSNR" in table and "pass" in table
    assert "Neural Engine" in results.locator("[data-role=compute-units]").inner_text()

    # The repo link works: the Hub serves the pushed files under it.
    repo_link = results.locator("[data-role=links] a", has_text="Open the repo").get_attribute("href")
    assert repo_link == f"{hub.url}/{target}"
    with urllib.request.urlopen(f"{repo_link}/resolve/main/README.md", timeout=10) as response:
        assert response.status == 200 and b"Core ML" in response.read()
    with urllib.request.urlopen(f"{hub.url}/api/models/{target}", timeout=10) as response:
        files = [s["rfilename"] for s in json.load(response)["siblings"]]
    assert "job-bert.mlpackage/Manifest.json" in files

    # The package as a zip, fetched back from the Hub by the app.
    # The button itself says the zip is on its way (a big package takes a minute), then comes back.
    page.evaluate("""() => { const button = document.querySelector('#download'); window.downloadLabels = [];
        new MutationObserver(() => window.downloadLabels.push(button.innerText)).observe(
            button, {childList: true, subtree: true, characterData: true, attributes: true}); }""")
    page.click("#download")
    file_link = page.wait_for_selector("#download-file a[href*='.zip']")
    assert any("Preparing the zip" in label for label in page.evaluate("window.downloadLabels"))
    page.wait_for_function("() => document.querySelector('#download').innerText.startsWith('Download the package')")
    with page.expect_download() as download:
        file_link.click()
    archive = tmp_path / download.value.suggested_filename
    download.value.save_as(archive)
    names = zipfile.ZipFile(archive).namelist()
    assert "job-bert.mlpackage/Manifest.json" in names and any(n.endswith("weight.bin") for n in names), names

    # "My jobs" lists it, finished, with its repo.
    page.wait_for_function("() => document.querySelector('#jobs-table')?.innerText.includes('browser-bert-coreml')")
    assert "Done" in page.inner_text("#jobs-table")
    assert OWNER_TOKEN not in page_text(page)
    screenshot(page, tmp_path, "1-converted-and-pushed")

    # Converting into it again is announced before Convert, at once after the push (the form still names it).
    assert f"{target} already exists" in page.inner_text("#push-target-note")
    page.fill("#push-repo textarea, #push-repo input", "")
    page.fill("#push-repo textarea, #push-repo input", target)
    # (The emptied field announced the default target first: wait for the answer to the typed one.)
    page.wait_for_function(f"() => document.querySelector('#push-target-note')?.innerText.includes('{target} already exists')")
    page.locator("#push-target-note").scroll_into_view_if_needed()
    screenshot(page, tmp_path, "1b-existing-target-announced")


def start_task_job(page, model: str, task: str) -> None:
    sign_in(page)
    page.wait_for_selector("[data-signed-in=yes]")
    choose_model(page, model)
    page.locator(f"#task input[value={task}]").check()
    set_options(page, "8")
    submit(page)
    assert watch_job(page)[-1][0] == "finished"
    page.locator("#try-it").wait_for()


def test_each_job_shows_only_its_own_data_and_tries(page, tmp_path):
    """Try a text-generation package (driven as swift-transformers drives it, PyTorch beside it),
    then convert an embedder in the same page: nothing of the first job's try remains, each job
    is named with its variant, the embedder's try compares two sentences; reopening the first
    job shows its own empty panel, not the embedder's."""
    start_task_job(page, repos.TINY_LLAMA, "text-generation")
    assert "job-llama · text-generation · float16 · iOS17" in page.inner_text("#job-status")
    # The continuation verdict says what it counted.
    assert "the same" in page.inner_text("#job-results [data-role=continuation]")
    assert page.locator("#try-text").get_attribute("class") is not None
    assert "swift-transformers" in page.inner_text("#try-note")
    page.fill("#try-text textarea", "hello world")
    page.click("#try-run")
    page.locator("#try-output [data-kind=generate]").wait_for(timeout=120_000)
    output = page.inner_text("#try-output")
    assert "Package (fp16 emulation)" in output and "PyTorch (float32)" in output and "tokens/s" in output
    assert page.locator("#try-output [data-role=continuation]").count() == 2
    page.locator("#try-it").scroll_into_view_if_needed()
    screenshot(page, tmp_path, "4-try-text-generation")

    choose_model(page, repos.TINY)
    page.locator("#task input[value=feature-extraction]").check()
    set_options(page, "8")
    submit(page)
    assert watch_job(page)[-1][0] == "finished"
    page.locator("#try-other").wait_for()
    assert "job-bert · feature-extraction · float16 · iOS17" in page.inner_text("#job-status")
    assert page.locator("#try-output [data-kind]").count() == 0, "the first job's try is still shown"
    assert page.input_value("#try-text textarea") == "" and "hello world" not in page.inner_text("#try-it")
    table = page.inner_text("#jobs-table")
    assert "text-generation · float16 · iOS17" in table and "feature-extraction · float16 · iOS17" in table
    page.locator("#try-it").scroll_into_view_if_needed()
    screenshot(page, tmp_path, "4b-another-job-nothing-of-the-first")

    page.fill("#try-text textarea", "hello world")
    page.fill("#try-other textarea", "the world")
    page.click("#try-run")
    page.locator("#try-output [data-kind=similarity]").wait_for(timeout=120_000)
    values = [float(v) for v in page.locator("#try-output [data-role=similarity]").all_inner_texts()]
    assert len(values) == 2 and abs(values[0] - values[1]) < 0.01, values  # the package agrees with PyTorch
    page.locator("#try-it").scroll_into_view_if_needed()
    screenshot(page, tmp_path, "5-try-embedder")

    page.locator("#jobs-table").get_by_text("text-generation").first.click()
    page.wait_for_function("() => document.querySelector('#job-status')?.innerText.includes('text-generation')")
    page.locator("#try-other").wait_for(state="hidden")
    assert page.locator("#try-output [data-kind]").count() == 0 and page.input_value("#try-text textarea") == ""
    screenshot(page, tmp_path, "5b-first-job-reopened")


def test_choices_for_another_model_are_reset_and_a_repo_you_cannot_write_is_refused_at_once(page, service, tmp_path):
    sign_in(page)
    page.wait_for_selector("[data-signed-in=yes]")
    choose_model(page, repos.TINY_LLAMA)
    page.click("#options")
    page.locator("#kv-cache input[value=stateful]").check()
    page.fill("#push-repo textarea, #push-repo input", f"{OWNER}/llama-stateful")
    choose_model(page, repos.TINY)
    page.locator("#model-summary [data-role=adapted]").wait_for()
    assert "KV cache set back to None" in page.inner_text("#model-summary [data-role=adapted]")
    assert page.locator("#kv-cache input[value=none]").is_checked()
    assert page.input_value("#push-repo textarea, #push-repo input") == ""
    screenshot(page, tmp_path, "2d-options-reset-for-another-model")

    before = service.hub_state()
    page.fill("#push-repo textarea, #push-repo input", f"{OTHER}/not-yours")
    page.click("#convert")
    page.wait_for_function("() => document.querySelector('#submit-message')?.innerText.includes('may not')")
    assert f"Your token may not create or write to {OTHER}/not-yours" in page.inner_text("#submit-message")
    assert page.query_selector("#job-status [data-state]") is None and service.hub_state() == before
    assert "--" not in page.inner_text("#submit-message")
    screenshot(page, tmp_path, "2e-wrong-repo-refused-before-any-work")


def test_a_push_refused_at_the_end_says_it_converted_and_offers_the_package(page, service, tmp_path):
    """Write access passed the check at submit, then was lost before the push: the page says the
    model converted and passed, why the push failed, and hands over the package it kept."""
    target = f"{OWNER}/browser-refused-at-push"
    sign_in(page)
    page.wait_for_selector("[data-signed-in=yes]")
    choose_model(page, repos.TINY)
    set_options(page, "8")
    page.fill("#push-repo textarea, #push-repo input", target)
    submit(page)
    service.hub.inject_fault(target, status=403)  # after the check at submit: the job meets it at the push
    try:
        assert watch_job(page)[-1][0] == "failed"
    finally:
        service.hub.clear_faults(target)
    error = page.locator("#job-outcome [data-role=error][data-kept=yes]")
    error.wait_for()
    text = error.inner_text()
    assert f"Your model converted and passed its checks, but it could not be pushed to {target}." in text
    assert f"may not create or write to {target}" in text and "Download the package below" in text
    assert "or fix the access and convert again" in text and "--" not in text and "cannot be converted" not in text
    page.click("#download")
    file_link = page.wait_for_selector("#download-file a[href*='.zip']")
    with page.expect_download() as download:
        file_link.click()
    archive = tmp_path / download.value.suggested_filename
    download.value.save_as(archive)
    assert archive.name == "browser-refused-at-push.zip"
    assert "job-bert.mlpackage/Manifest.json" in zipfile.ZipFile(archive).namelist()
    assert OWNER_TOKEN not in page_text(page)
    screenshot(page, tmp_path, "2f-push-refused-package-offered")


def test_convert_waits_for_a_request_that_can_run(page, tmp_path):
    """A stateful KV cache needs iOS 18: with the default iOS 17 the form says so and Convert
    stays disabled (nothing is queued to fail at Check); choosing iOS 18 enables it."""
    sign_in(page)
    page.wait_for_selector("[data-signed-in=yes]")
    choose_model(page, repos.TINY_LLAMA)
    page.wait_for_function("() => !document.querySelector('#convert').disabled")
    page.click("#options")
    page.locator("#kv-cache input[value=stateful]").check()
    page.locator("#option-check [data-level=error]").wait_for()
    assert "iOS18" in page.inner_text("#option-check") or "iOS 18" in page.inner_text("#option-check")
    page.wait_for_function("() => document.querySelector('#convert').disabled")
    assert "up to 511 tokens" in page.inner_text("#sequence-note")  # the context the model allows (its maximum: 512)
    page.locator("#option-check").scroll_into_view_if_needed()
    screenshot(page, tmp_path, "2b-convert-disabled")

    target = page.locator("#minimum-deployment-target input")
    target.click()
    target.fill("iOS18")
    target.press("Enter")
    page.wait_for_function("() => !document.querySelector('#convert').disabled")
    # no refusal left; in its place, the devices the package fits
    page.locator("#option-check [data-role=device-fit]").wait_for()
    assert page.locator("#option-check [data-level=error]").count() == 0
    assert "Fits iPhones (6 and 8 GB), iPads (8 and 16 GB) and Macs (8 and 16 GB)." in page.inner_text("#option-check")
    page.locator("#option-check").scroll_into_view_if_needed()
    screenshot(page, tmp_path, "2b-device-fit")


def test_a_gated_models_copy_is_private_and_public_needs_a_confirmation(page, tmp_path):
    """Said before Convert: why the copy of a gated model goes to a private repo; choosing
    Public asks to confirm that its licence allows it, and Convert without it says so."""
    sign_in(page)
    page.wait_for_selector("[data-signed-in=yes]")
    choose_model(page, f"{OWNER}/gated-bert")
    page.wait_for_function("() => document.querySelector('#licence-note')?.innerText.includes('private repo')")
    assert "alice/gated-bert is gated" in page.inner_text("#licence-note")
    assert not page.locator("#confirm-public").is_visible()
    page.locator("#visibility input[value=public]").check()
    page.locator("#confirm-public").wait_for(state="visible")
    assert "may break its licence" in page.inner_text("#licence-note")
    page.click("#convert")
    page.wait_for_function("() => document.querySelector('#submit-message')?.innerText.includes('confirm')")
    assert "its licence allows it" in page.inner_text("#submit-message")
    assert page.query_selector("#job-status [data-state]") is None  # nothing was queued
    page.locator("#licence-note").scroll_into_view_if_needed()
    screenshot(page, tmp_path, "2c-gated-model-public-needs-confirmation")


def test_a_rejected_token_and_an_unsupported_model_say_why(page, tmp_path):
    sign_in(page, "hf_not_a_real_token")
    page.wait_for_selector("#user [data-level=error]")
    assert "rejected the token" in page.inner_text("#user")
    sign_in(page)
    page.wait_for_selector("[data-signed-in=yes]")

    choose_model(page, repos.SPEECH)
    card = page.locator("#model-summary [data-model-ok=no]")
    assert "cannot be converted" in card.inner_text()
    assert "'wav2vec2' cannot be converted: it is a speech or audio model" in card.inner_text()
    request = card.locator("[data-role=request] a").get_attribute("href")
    assert request.startswith(REPORT_URL + "?") and "wav2vec2" in parse_qs(urlparse(request).query)["title"][0]
    assert not page.locator("#task").is_visible() and not page.locator("#quantize").is_visible()
    assert page.locator("#convert").is_disabled()
    screenshot(page, tmp_path, "2-unsupported-model")


def test_an_unlisted_architecture_shows_its_family_and_the_untested_mark(page, tmp_path):
    sign_in(page)
    page.wait_for_selector("[data-signed-in=yes]")
    choose_model(page, repos.UNLISTED_LLM)
    card = page.locator("#model-summary [data-model-ok=yes]")
    family = card.locator("[data-role=family][data-tested=no]")
    assert "Family: decoder" in family.inner_text()
    assert "architecture not in the tested list" in family.inner_text()
    assert "validation decides" in family.inner_text()
    assert "text-generation" in card.inner_text()
    page.wait_for_selector("#convert:not([disabled])")  # convertible: validation will decide
    choose_model(page, repos.TINY)  # a registry architecture: its family, tested
    page.wait_for_selector("#model-summary [data-role=family]:not([data-tested])")
    assert "Family: encoder (tested)" in page.inner_text("#model-summary [data-role=family]")
    screenshot(page, tmp_path, "2b-unlisted-architecture")


def test_a_float16_only_failure_says_so_once_and_its_float32_action_converts(page, service, tmp_path):
    """FRAGILE overflows float16 only: one message names the cause and float32 as the remedy, no
    report link points anywhere, and the page's one action converts it again in float32."""
    before = service.hub_state()
    start_job(page, repos.FRAGILE)
    assert watch_job(page)[-1][0] == "failed"

    error = page.locator("#job-results [data-role=error]")
    error.wait_for()
    assert error.get_attribute("data-kind") == "validation"
    message = error.inner_text()
    assert "float16 arithmetic" in message and "Nothing was pushed" in message and "Convert in float32" in message
    assert "authors" not in page.inner_text("#job") and "_agreement" not in message and "max_abs" not in message
    # Said once: the progress line carries the verdict only, not the message again.
    assert "float16 arithmetic" not in page.inner_text("#job-status")
    assert page.locator("#job-results [data-role=report]").count() == 0
    assert page.locator("#job-results [data-role=validation-table] tr[data-passed=no]").count() >= 1
    assert OWNER_TOKEN not in page_text(page)
    assert page.locator("#job-status li.cm-failed").count() == 1
    assert not page.locator("#download").is_visible()
    assert service.hub_state() == before, "a package that failed validation was pushed"
    screenshot(page, tmp_path, "3-float16-failed")

    failed_id = page.locator("#job-status").inner_text().split("Job ")[-1].strip()
    page.click("#convert-float32")
    page.wait_for_function("id => !document.querySelector('#job-status').innerText.includes('Job ' + id)",
                           arg=failed_id)
    seen = watch_job(page)
    assert seen[-1][0] == "finished", seen
    assert "float32" in page.inner_text("#job-results") and not page.locator("#convert-float32").is_visible()
    # The form now says what was converted: float32.
    assert page.locator("#precision label:has(input:checked)").inner_text().startswith("float32")
    pushed = service.hub.files(f"{OWNER}/fragile-bert-float32-coreml")  # the variant is in the default name
    assert any(name.endswith(".mlpackage/Manifest.json") for name in pushed)
    # A float32 package has no float16 emulation rows: no device runs it in float16.
    assert "emulation" not in page.inner_text("#job-results [data-role=validation-table]")
    screenshot(page, tmp_path, "3b-float32-passed")

    # My jobs keeps the failed run beside the new one; reopening it shows it, its model in the form.
    page.wait_for_function("() => document.querySelector('#jobs-table').innerText.includes('float16 only')")
    assert "Done" in page.inner_text("#jobs-table")
    page.locator("#jobs-table").get_by_text("float16 only").first.click()
    page.wait_for_function("() => document.querySelector('#job-status [data-state]')?.dataset.state === 'failed'")
    page.wait_for_function("m => document.querySelector('#model input').value === m", arg=repos.FRAGILE)


def test_a_reload_keeps_the_sign_in_and_the_running_job_which_can_be_cancelled(page, browser_context, app_url,
                                                                             service, tmp_path):
    # The job converts in seconds: its push waits on the Hub (an existing repo, so that nothing is
    # created before it), so it still runs after the reload and the second tab, whatever the load.
    target = f"{OWNER}/browser-cancelled-mid-push"
    if target not in service.hub.repo_ids():
        service.hub.add_repo(target, {"README.md": "an earlier card"}, owner_token=OWNER_TOKEN)
    before = service.hub_state()
    sign_in(page)
    page.wait_for_selector("[data-signed-in=yes]")
    choose_model(page, repos.SLOW)
    set_options(page, "8")
    page.fill("#push-repo textarea, #push-repo input", target)
    submit(page)  # the push access is checked before the job shows: the Hub answers that at once
    service.hub.inject_fault(target, status=None, delay=60)
    try:
        _reload_and_cancel(page, browser_context, app_url, service, tmp_path)
    finally:
        service.hub.clear_faults(target)  # the stopped push's read-back goes through
    assert watch_job(page, timeout=30)[-1][0] == "cancelled"
    assert "Cancelled" in page.inner_text("#job-results")
    assert not page.locator("#cancel").is_visible()
    # The worker is free again and nothing was pushed.
    wait_until(lambda: not service.running_job_ids(), 30, what="the cancelled job to leave the worker")
    assert service.hub_state() == before
    screenshot(page, tmp_path, "4-cancelled")


def _reload_and_cancel(page, browser_context, app_url, service, tmp_path) -> None:
    watch_job(page, until=("running",) + ENDED)
    assert job_state(page)[0] == "running", "the job ended before it could be cancelled"
    # A reload, and a second tab, find the user signed in and the running job shown.
    page.reload(wait_until="domcontentloaded")
    page.wait_for_selector("[data-signed-in=yes]")
    page.wait_for_selector("#job-status [data-state=running]")
    assert "slow-bert" in page.inner_text("#job-status") and "slow-bert" in page.inner_text("#jobs-table")
    assert OWNER_TOKEN not in page.evaluate("() => JSON.stringify(localStorage)")  # a reference, not the token
    other = browser_context.new_page()
    other.goto(app_url, wait_until="domcontentloaded")
    other.wait_for_selector("[data-signed-in=yes]")
    other.wait_for_selector("#job-status [data-state]")
    screenshot(other, tmp_path, "4c-second-tab-signed-in")
    other.close()
    assert job_state(page)[0] == "running"
    worker = service.workers[0]
    horses = set(worker.children())
    page.click("#cancel")
    # The Hub answers again only once the job's work horse is gone (its push must not go on).
    wait_until(lambda: not horses & set(worker.children()), 30, what="the cancelled job's work horse to stop")


def _convert_photo_model(page, service, tmp_path, model_type: str, task: str) -> None:
    """A tiny random `model_type` on the local Hub, converted from the page (no sequence length: an image model's is not used)."""
    from tests.kind_models import build_kind

    model = f"{OWNER}/job-{model_type.replace('_', '-')}"
    if model not in service.hub.repo_ids():
        service.hub.add_repo_from_folder(model, build_kind(model_type, tmp_path / model_type), owner_token=OWNER_TOKEN)
    choose_model(page, model)
    assert page.locator(f"#task input[value={task}]").is_checked()
    submit(page)
    # An earlier job's view (finished, its try shown) stays until this one's lands: wait for this one.
    page.wait_for_function("m => document.querySelector('#job-status [data-role=job-identity]')?.innerText.includes(m)",
                           arg=model)
    assert watch_job(page)[-1][0] == "finished"
    page.locator("#try-photo-group").wait_for()


def test_try_a_depth_package_on_a_sample_photo_and_a_detector_on_your_own(page, service, tmp_path):
    """Try it on a photo (issue 29): a depth package on the page's own sample photo shows the photo
    and both depth maps as images; a detector on an uploaded photo shows the boxes of both sides
    drawn on it. No text box is offered for either."""
    sign_in(page)
    page.wait_for_selector("[data-signed-in=yes]")
    _convert_photo_model(page, service, tmp_path, "depth_anything", "depth-estimation")
    assert not page.locator("#try-text").is_visible() and not page.locator("#try-clip").is_visible()
    assert "depth map of your photo" in page.inner_text("#try-note")
    page.locator("#try-samples img").first.click()  # the street
    page.locator("#try-photo img").wait_for()
    page.click("#try-run")
    page.locator("#try-output [data-kind=depth]").wait_for(timeout=120_000)
    assert page.locator("#try-output figure img").count() == 3
    assert "PSNR" in page.inner_text("#try-output [data-role=try-verdict]")
    page.locator("#try-it").scroll_into_view_if_needed()
    screenshot(page, tmp_path, "6-try-depth")

    _convert_photo_model(page, service, tmp_path, "detr", "object-detection")
    assert page.locator("#try-output [data-kind]").count() == 0, "the depth job's try is still shown"
    from PIL import Image, ImageDraw

    photo = Image.new("RGB", (400, 300), (230, 230, 220))
    ImageDraw.Draw(photo).ellipse([120, 80, 280, 240], fill=(200, 40, 40))
    photo.save(tmp_path / "ball.png")
    page.locator("#try-photo input[type=file]").set_input_files(str(tmp_path / "ball.png"))
    page.locator("#try-photo img").wait_for()
    page.click("#try-run")
    page.locator("#try-output [data-kind=detect]").wait_for(timeout=120_000)
    assert page.locator("#try-output [data-role=drawn] img").count() == 1
    counts = [int(n) for n in page.locator("#try-output [data-role=count]").all_inner_texts()]
    assert len(counts) == 2 and counts[0] == counts[1] > 0, counts  # the package finds what PyTorch finds
    page.locator("#try-it").scroll_into_view_if_needed()
    screenshot(page, tmp_path, "6b-try-detection")


def test_the_target_repo_is_read_again_after_a_reload_and_core_ai_speaks_its_own_words(page, service, tmp_path):
    """Issue 24's walk-through, its last defects: a page reloaded while a job ran was told when the
    job ended that the job's repo already existed, under a form naming no repo; the box removing
    a repo's other packages showed under a repo that did not exist; a Core AI LLM form counted no
    KV cache and offered Core ML's compute units."""
    target = f"{OWNER}/browser-reloaded-target"
    mixed = f"{OWNER}/browser-mixed-coreml"
    if mixed not in service.hub.repo_ids():  # an earlier conversion's Core ML package
        service.hub.add_repo(mixed, {"job-llama.mlpackage/Manifest.json": "{}", "README.md": "card"}, owner_token=OWNER_TOKEN)
    sign_in(page)
    page.wait_for_selector("[data-signed-in=yes]")
    assert not page.locator("#remove-others").is_visible()  # no repo named yet
    choose_model(page, repos.SLOW)
    page.wait_for_function("() => document.querySelector('#quantize')?.innerText.includes(' MB')")  # the form has settled
    set_options(page, "8")
    page.fill("#push-repo textarea, #push-repo input", target)
    page.wait_for_timeout(1000)
    assert page.inner_text("#push-target-note").strip() == "" and not page.locator("#remove-others").is_visible()
    submit(page)
    watch_job(page, until=("running",) + ENDED)
    page.reload(wait_until="domcontentloaded")
    page.wait_for_selector("[data-signed-in=yes]")
    page.wait_for_selector("#job-status [data-state]")
    assert watch_job(page)[-1][0] == "finished"
    page.wait_for_timeout(1000)  # a poll or two after the push
    assert page.inner_text("#push-target-note").strip() == "", "a repo the reloaded form does not name was announced"
    assert not page.locator("#remove-others").is_visible()
    # Named again: read from the Hub — it exists, and holds only what this push would replace.
    choose_model(page, repos.SLOW)
    page.fill("#push-repo textarea, #push-repo input", target)
    page.wait_for_function(f"() => document.querySelector('#push-target-note')?.innerText.includes('{target} already exists')")
    assert "other package" not in page.inner_text("#push-target-note") and not page.locator("#remove-others").is_visible()

    # A Core AI LLM: its cache at the context it grows to, its own validation words, and the
    # repo holding its Core ML package offers the box.
    choose_model(page, repos.TINY_LLAMA)
    if not page.locator("#format").is_visible():
        page.click("#options")  # closed again by the reload
    page.locator("#format input[value=coreai]").check()
    page.wait_for_function("() => document.querySelector('#option-check')?.innerText.includes('at its full')")
    fit = page.inner_text("#option-check")
    assert "at its full 512-token context (its KV cache grows with the text up to there)" in fit and "KV cache" in fit
    assert "grows with the text up to its context, 512 tokens" in page.inner_text("#sequence-note")
    runner = page.inner_text("#runner")
    assert "Core AI runtime" in runner and "Mac runner" not in runner and "reference executor" not in runner
    # No iOS17 for an .aimodel: the target field is gone, and the format field says where it runs.
    page.locator("#minimum-deployment-target").wait_for(state="hidden")
    assert "The .aimodel runs on iOS 27 and macOS 27" in page.inner_text("#format")
    page.fill("#push-repo textarea, #push-repo input", mixed)
    page.wait_for_function(f"() => document.querySelector('#push-target-note')?.innerText.includes('{mixed} already exists')")
    assert "(job-llama.mlpackage) stays" in page.inner_text("#push-target-note")
    assert "adds this package" in page.inner_text("#push-target-note")  # it holds no .aimodel of this model
    page.locator("#remove-others").wait_for(state="visible")
    page.locator("#push-target-note").scroll_into_view_if_needed()
    screenshot(page, tmp_path, "2g-core-ai-form-and-a-repo-holding-another-package")
    # Both formats: the target is the .mlpackage's, and the .aimodel beside it runs on the 27 releases.
    page.locator("#format input[value=both]").check()
    target_field = page.locator("#minimum-deployment-target")
    target_field.wait_for(state="visible")
    page.wait_for_function("() => document.querySelector('#minimum-deployment-target')?.innerText.includes('.mlpackage')")
    assert "Minimum deployment target of the .mlpackage" in target_field.inner_text()
    assert "The .aimodel beside it runs on iOS 27 and macOS 27" in target_field.inner_text()
    target_field.scroll_into_view_if_needed()
    screenshot(page, tmp_path, "2h-both-formats-say-whose-deployment-target")
