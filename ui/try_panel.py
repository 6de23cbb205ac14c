"""The "Try it" panel: laid out once (its boxes, a photo with sample photos, a clip), set up for
the job shown (the inputs its kind needs), and run the pushed package on the person's text,
photo or clip (a worker runs it; this only queues the try and polls it).
"""

from __future__ import annotations

import base64
import io
import tempfile
import time
import wave
from pathlib import Path

import gradio as gr
import numpy as np

from converters.try_it import CLIP_KINDS, MAX_CHARS, MAX_CLIP_SECONDS, PHOTO_KINDS, PHOTO_SIDE
from ui import render
from ui.identity import Who, owned, safe_text, signed_in
from ui.page import POLL_SECONDS, Page, TryIt
from worker import api
from worker.status import JobStatus

PHOTO_KIND_NAMES, CLIP_KIND_NAMES = set(PHOTO_KINDS.values()), set(CLIP_KINDS.values())
SAMPLES = {"A street": "street.png", "Shapes on a table": "shapes.png"}  # the sample photos, drawn here
NO_CLIP = "Record or upload a clip first (speech, up to 30 seconds)."


def try_it_section() -> TryIt:
    """The panel's components, hidden until a finished job offers a try."""
    with gr.Accordion("Try it", open=True, visible=False, elem_id="try-it") as group:
        note_html = gr.HTML(elem_id="try-note")
        with gr.Column(visible=False, elem_id="try-photo-group") as photo_group:
            photo = gr.Image(label="Photo", type="pil", image_mode="RGB", sources=["upload", "clipboard"], height=260,
                             elem_id="try-photo")
            gr.Examples([[str(path)] for path in sample_photos()], inputs=[photo], label="Or a sample photo",
                        elem_id="try-samples", api_visibility="private")
        clip = gr.Audio(label="Clip: a WAV file or a recording (speech, up to 30 seconds)", type="numpy",
                        sources=["upload", "microphone"], visible=False, elem_id="try-clip")
        text_box = gr.Textbox(label="Prompt", lines=2, max_length=MAX_CHARS, elem_id="try-text")
        other_box = gr.Textbox(label="Second sentence", lines=1, max_length=MAX_CHARS, visible=False, elem_id="try-other")
        run_button = gr.Button("Run", elem_id="try-run")
        output_html = gr.HTML(elem_id="try-output")
    return TryIt(group, note_html, text_box, other_box, run_button, output_html, photo_group, photo, clip)


def try_it_setup(panel: TryIt, kind: str | None, fresh: bool, unavailable: str | None = None,
                 status: JobStatus | None = None) -> dict:
    """The Try it panel for a job: shown with the inputs its kind needs (what was typed or
    chosen is kept while the same job is shown), or only with why it can't be tried (`unavailable`)."""
    updates = _setup(panel, kind, fresh, unavailable, status)
    return {component: update for component, update in updates.items() if component is not None}


def _setup(panel: TryIt, kind: str | None, fresh: bool, unavailable: str | None, status: JobStatus | None) -> dict:
    media = {panel.photo_group: gr.update(visible=kind in PHOTO_KIND_NAMES and not unavailable),
             panel.clip: gr.update(visible=kind in CLIP_KIND_NAMES and not unavailable)}
    if kind is None or fresh:  # nothing of an earlier job's photo or clip may reappear with another
        media[panel.photo] = gr.update(value=None)
        media[panel.clip] = gr.update(value=None, visible=kind in CLIP_KIND_NAMES and not unavailable)
    if kind is None:  # hidden, and emptied: nothing of an earlier job's try may reappear with it
        return {panel.group: gr.update(visible=False), panel.output_html: "", panel.text_box: gr.update(value=""),
                panel.other_box: gr.update(value=""), **media}
    if unavailable:
        return {panel.group: gr.update(visible=True), panel.note_html: unavailable, panel.output_html: "",
                panel.text_box: gr.update(visible=False), panel.other_box: gr.update(visible=False),
                panel.run_button: gr.update(visible=False), **media}
    label, example, second = render.TRY_LABELS.get(kind, ("", "", None))
    other, other_example = second or ("", "")
    typed = bool(label)  # a photo's or a clip's kind types nothing, but an image-and-text model's labels
    updates = {panel.group: gr.update(visible=True), panel.note_html: render.try_note(kind, status),
               panel.text_box: gr.update(label=label, placeholder=example, visible=typed),
               panel.other_box: gr.update(label=other, visible=bool(other), placeholder=other_example),
               panel.run_button: gr.update(visible=True), **media}
    if fresh:
        updates[panel.text_box] = gr.update(label=label, placeholder=example, value="", visible=typed)
        updates[panel.other_box] = gr.update(label=other, visible=bool(other), placeholder=other_example, value="")
        updates[panel.output_html] = ""
    return updates


# ---------------------------------------------------------------------- photos and clips


def sample_photos(folder: Path | None = None) -> list[Path]:
    """The sample photos the panel offers, drawn here (no download): a street with a house, a
    tree and a road going into the distance, and coloured shapes on a table. Made once a folder."""
    folder = folder or Path(tempfile.gettempdir()) / "coreml-converter-try-samples"
    paths = [folder / name for name in SAMPLES.values()]
    if not all(path.is_file() for path in paths):
        folder.mkdir(parents=True, exist_ok=True)
        for path, image in zip(paths, (_street(), _shapes())):
            partial = path.with_suffix(f".{time.time_ns()}.tmp")
            image.save(partial, format="PNG")
            partial.replace(path)  # whole, even when two processes draw it at once
    return paths


def _street():
    from PIL import Image, ImageDraw

    width, height = 320, 240
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(120):  # the sky, lighter towards the horizon
        draw.line([(0, y), (width, y)], fill=(90 + y, 150 + y // 2, 235))
    draw.ellipse([250, 20, 290, 60], fill=(255, 220, 90))
    draw.polygon([(0, 120), (60, 95), (130, 112), (210, 90), (320, 115), (320, 130), (0, 130)], fill=(110, 150, 110))
    draw.rectangle([0, 120, width, height], fill=(95, 160, 80))
    draw.polygon([(140, 120), (180, 120), (300, 240), (20, 240)], fill=(120, 120, 125))  # the road, into the distance
    for top in range(125, 240, 22):
        bottom = top + 10
        draw.polygon([(159 - (top - 120) * 0.04, top), (161 + (top - 120) * 0.04, top),
                      (161 + (bottom - 120) * 0.05, bottom), (159 - (bottom - 120) * 0.05, bottom)], fill=(240, 240, 230))
    draw.rectangle([20, 120, 100, 185], fill=(200, 80, 60))  # a house
    draw.polygon([(12, 122), (60, 82), (108, 122)], fill=(110, 50, 40))
    draw.rectangle([52, 150, 68, 185], fill=(80, 50, 30))
    draw.rectangle([30, 132, 46, 146], fill=(180, 220, 250))
    draw.rectangle([74, 132, 90, 146], fill=(180, 220, 250))
    draw.rectangle([252, 140, 262, 200], fill=(100, 70, 40))  # a tree
    draw.ellipse([226, 95, 288, 155], fill=(40, 120, 50))
    return image


def _shapes():
    from PIL import Image, ImageDraw

    width, height = 320, 240
    image = Image.new("RGB", (width, height), (235, 232, 225))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 150, width, height], fill=(150, 100, 60))  # the table
    draw.rectangle([0, 150, width, 156], fill=(120, 80, 45))
    for radius in range(30, 0, -2):  # a red ball, lit from the top left
        shade = 255 - radius * 3
        draw.ellipse([70 - radius - (30 - radius) // 3, 125 - radius - (30 - radius) // 3,
                      70 + radius - (30 - radius) // 3, 125 + radius - (30 - radius) // 3], fill=(shade, 40, 40))
    draw.polygon([(130, 160), (190, 160), (190, 100), (130, 100)], fill=(50, 90, 200))  # a blue box
    draw.polygon([(190, 100), (205, 88), (205, 148), (190, 160)], fill=(35, 65, 150))
    draw.polygon([(130, 100), (145, 88), (205, 88), (190, 100)], fill=(80, 120, 230))
    draw.polygon([(225, 165), (295, 165), (260, 95)], fill=(60, 170, 80))  # a green cone
    return image


def photo_bytes(image) -> bytes:
    """A photo as the try sends it: PNG, at most PHOTO_SIDE pixels a side (the packages take far
    fewer; the worker resizes it to the package's own size)."""
    image = image.convert("RGB")
    image.thumbnail((PHOTO_SIDE, PHOTO_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def clip_bytes(recorded: tuple[int, np.ndarray]) -> bytes:
    """A clip as Gradio hands it (rate, samples) as the try sends it: a mono 16-bit WAV at its own
    rate (the worker resamples it to the model's)."""
    from converters.errors import UserInputError

    rate, samples = recorded
    samples = np.asarray(samples)
    if samples.size == 0:
        raise UserInputError(NO_CLIP)
    if len(samples) / rate > MAX_CLIP_SECONDS + 0.5:
        raise UserInputError(f"The clip is {len(samples) / rate:.0f} seconds long; try one of at most {MAX_CLIP_SECONDS}.")
    if np.issubdtype(samples.dtype, np.floating):
        samples = np.clip(samples, -1.0, 1.0) * 32767
    elif samples.dtype != np.int16:
        samples = samples.astype(np.float64) / -float(np.iinfo(samples.dtype).min) * 32767
    mono = samples.astype(np.float64).mean(axis=1) if samples.ndim == 2 else samples.astype(np.float64)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(int(rate))
        out.writeframes(np.round(mono).astype("<i2").tobytes())
    return buffer.getvalue()


def _encoded(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ---------------------------------------------------------------------- running a try


def said_in_the_panel(page: Page, data: dict, text: str) -> str:
    return render.message(text, "error")


def try_inputs(panel: TryIt, kind: str, data: dict) -> dict:
    """What the try is sent: the typed text (an empty box tries the shown example), the photo
    (none chosen: the first sample) or the clip."""
    inputs = {}
    label, example, second = render.TRY_LABELS.get(kind, ("", "", None))
    if label:
        inputs["text"] = data[panel.text_box] or example
    if second:
        inputs["other"] = data[panel.other_box] or second[1]
    if kind in PHOTO_KIND_NAMES:
        chosen = data.get(panel.photo)
        if chosen is None:
            from PIL import Image

            chosen = Image.open(sample_photos()[0])
        inputs["photo"] = _encoded(photo_bytes(chosen))
    if kind in CLIP_KIND_NAMES:
        from converters.errors import UserInputError

        if data.get(panel.clip) is None:
            raise UserInputError(NO_CLIP)
        inputs["audio"] = _encoded(clip_bytes(data[panel.clip]))
    return inputs


@signed_in(said_in_the_panel)
def try_package(page: Page, data: dict, who: Who):
    """Queue the try, then wait for its answer here (the worker runs it; this only polls)."""
    panel = page.results.try_it
    status = api.status(data[page.job]) if data[page.job] else None
    kind = render.try_kind(status) if status and owned(status, who.user) else None
    if kind is None:
        yield render.message("There is no package to try: convert a model first.", "error")
        return
    inputs = try_inputs(panel, kind, data)  # a clip it cannot send: said by @signed_in
    try_id = api.submit_try(data[page.job], who.token, who.user, kind, inputs)  # its refusal: said by @signed_in
    deadline = time.monotonic() + api.TRY_TIMEOUT + 60
    while time.monotonic() < deadline:
        state = api.try_status(try_id, who.user)
        if state.state == "finished" and state.result:
            yield render.try_result(state.result, inputs)
            return
        if state.ended:
            yield render.message(safe_text(state.error or "The try failed.", who.token), "error")
            return
        yield render.try_waiting(state)
        time.sleep(POLL_SECONDS)
    yield render.message("No worker answered in time: run it again in a moment.", "error")
