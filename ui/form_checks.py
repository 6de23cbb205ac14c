"""What the form says before Convert, as the person fills it in: what the engine would refuse,
what the sequence length means (with a stateful cache: the memory its context costs), the
tolerance's thresholds, where validation runs (in the chosen format's words), the expected
package size of each Size choice, the devices the package will fit, why a gated or private
model's copy is private, and whether the target repo exists (and holds other packages).
"""

from __future__ import annotations

import gradio as gr

from converters.errors import UserInputError
from converters.options import OPTIONS, ConversionOptions
from ui import form, models, render
from ui.identity import Who, signed_in
from ui.page import Page

# The options that change the expected package sizes (with the model and the task).
SIZE_INPUTS = ("precision", "minimum_deployment_target", "block_size", "group_size", "format")
# The options a default repo name carries (worker.spec.variant), and the package layout (which
# of an existing repo's packages a push replaces).
NAMING_OPTIONS = ("precision", "quantize", "kv_cache", "format", "naming")


def restricted(summary) -> bool:
    """Whether the model read is gated or private (its copy is then private by default)."""
    return bool(summary and (summary.gated or summary.private))


def session_of(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or ""


def check(page: Page, data: dict, request: gr.Request | None = None):
    """The engine's refusal of these options for this model, the sequence length's note, the
    tolerance's thresholds, whether Convert may be pressed and, when nothing is refused, the
    devices the package will fit (its memory at the chosen context and Size). Checks run side
    by side, and the first ones for a model just read take seconds: only the answer to a
    session's newest check is shown (an older one, finishing later, said the note and the
    refusal of a sequence length typed over since)."""
    newest = page.option_checks
    ticket = newest.begin(session_of(request))
    updates = _checked(page, data)
    return updates if newest.is_newest(session_of(request), ticket) else gr.skip()


def _checked(page: Page, data: dict) -> dict:
    fields, notes = page.options.fields, page.options
    summary, task = data[page.summary], data[page.model.task_radio]
    entered = {name: data[field] for name, field in fields.items()}
    level, note = form.format_sequence_note(entered["sequence_length"], summary.modality if summary is not None else "text",
                                            entered.get("kv_cache"), summary.config if summary is not None else None,
                                            entered.get("format"), task, summary is not None and summary.keeps_kv_cache)
    problem, fit = None, None
    if level != "error" and summary is not None:
        try:
            options = form.FormValues("", task, entered).options()
            problem = models.check_options(summary, task, options)
        except UserInputError as error:
            problem = str(error)
        if not problem and summary.convertible:
            fit = form.device_fit_note(summary.config, summary.modality, task,
                                       models.size_estimates(summary, task, options), options, summary.keeps_kv_cache)
    thresholds = models.tolerances(summary, entered["precision"], entered["tolerance"])
    # A request that cannot run is not queued: Convert waits until the form says yes.
    runnable = summary is not None and summary.convertible and level != "error" and not problem
    if problem and "equence length" in problem:
        note, level = "", "info"  # the refusal says it; a note describing the refused length would contradict it
    speech = summary is not None and summary.modality == "audio"
    return {notes.sequence_html: render.message(note, level),
            page.destination.problem_html: (render.message(problem, "error") if problem
                                            else render.message(fit[1], fit[0], role="device-fit") if fit else ""),
            notes.tolerance_html: render.tolerance(thresholds, entered["precision"]),
            page.destination.convert_button: gr.update(interactive=runnable),
            # Where validation runs, in the chosen format's words (a Mac adds nothing to an .aimodel),
            # and the deployment target only for a Core ML package (an .aimodel runs on the 27 releases).
            notes.runner: gr.update(**form.runner_field(entered.get("format"), data[notes.runner])),
            fields[form.TARGET]: gr.update(**form.target_field(entered.get("format"))),
            fields["format"]: gr.update(info=form.format_info(entered.get("format"))),
            **{fields[name]: gr.update(visible=not speech) for name in form.SPEECH_UNUSED},
            # The cache is a Core ML package's choice: an .aimodel always grows one, the field sets how far.
            fields[form.KV_CACHE]: gr.update(visible=not speech, **form.kv_cache_field(entered.get("format"))),
            # Hidden, it goes back to its default: a choice made for Core AI must not refuse a Core ML job unseen.
            fields[form.LLM_BUNDLE]: gr.update(visible=True) if form.llm_bundle_applies(entered.get("format"), task)
            else gr.update(visible=False, value=OPTIONS[form.LLM_BUNDLE].default)}


def push_changed(page: Page, data: dict) -> dict:
    """A pull request goes into the model's own repo: no repo name or visibility (nor clean-up:
    announce shows that box only for an existing repo that holds other packages)."""
    where = page.destination
    new_repo = data[where.push] != form.PULL_REQUEST
    return {where.push_repo: gr.update(visible=new_repo), where.visibility: gr.update(visible=new_repo)}


def sizes(page: Page, data: dict, request: gr.Request | None = None):
    """Each Size choice with the package size it gives the chosen model and task, and which
    choices the deployment target cannot run (only a session's newest estimate is shown, as
    with check)."""
    newest = page.size_lookups
    ticket = newest.begin(session_of(request))
    affecting = {name: page.options.fields[name] for name in SIZE_INPUTS}
    try:
        options = form.FormValues("", None, {name: data[f] for name, f in affecting.items()}).options()
    except UserInputError:  # a mistake the option check already shows
        return gr.skip()
    estimated = models.size_estimates(data[page.summary], data[page.model.task_radio], options)
    if not newest.is_newest(session_of(request), ticket):
        return gr.skip()
    target = options.minimum_deployment_target if options.deployment_target_applies else None
    return {page.model.size_radio: gr.update(choices=form.size_choices(estimated, options.precision, target))}


def explain(page: Page, data: dict) -> dict:
    """Why a gated or private model's copy is private, and the confirmation its public copy needs."""
    where = page.destination
    summary = data[page.summary]
    note = form.restricted_note(summary.repo_id, summary.gated, summary.private, data[where.visibility]) \
        if restricted(summary) else None
    public = restricted(summary) and data[where.visibility] == form.PUBLIC
    return {where.licence_html: render.message(note, "warning" if public else "info") if note else "",
            where.confirm_public: gr.update(visible=public, value=False if not public else data[where.confirm_public])}


def target_updates(page: Page, repo: str | None, token: str | None, name: str | None,
                   options: ConversionOptions | None) -> dict:
    """The target note and the clean-up box for the repo the form names (`repo`; None: none, or
    a pull request), read from the Hub now: the note when it exists, the box only when it holds
    packages this push would not replace (a hidden box is unticked: it removes nothing)."""
    where = page.destination
    packages = models.repo_packages(repo, token) if repo else None
    others = form.other_packages(packages, name, options) if packages else []
    replaced = packages is not None and len(others) < len(packages)  # it holds a package this push replaces
    note = render.message(form.existing_target_note(repo, others, replaced), "warning") if packages is not None else ""
    return {where.target_html: note, page.target: repo,
            where.remove_others: gr.update(visible=True) if others else gr.update(visible=False, value=False)}


def naming_options(page: Page, data: dict) -> ConversionOptions | None:
    try:
        return ConversionOptions.from_strings(**{name: data[page.options.fields[name]] for name in NAMING_OPTIONS})
    except UserInputError:
        return None  # the option check says what is wrong; name the repo by the defaults meanwhile


@signed_in()
def announce(page: Page, data: dict, who: Who, request: gr.Request):
    """Say when the target repo exists (a push replaces the package in it), and offer to remove
    the other packages it holds. Run at every edit that names the target and when the page
    (re)loads: nothing said about a repo is kept without being read again. Every edit is
    looked up with its own text, and only a session's newest answer is shown
    (models.NewestQuery): Gradio's `always_last` re-sends a stale value for the run it defers."""
    newest, where = page.target_lookups, page.destination
    ticket = newest.begin(request.session_hash)
    summary = data[page.summary]
    options = naming_options(page, data)
    name = summary.name if summary and summary.convertible else None  # no target named after a model not found
    repo = form.push_target(data[where.push_repo], who.user, name, options)
    updates = target_updates(page, repo if data[where.push] != form.PULL_REQUEST else None, who.token, name, options)
    if not newest.is_newest(request.session_hash, ticket):
        return gr.skip()
    return {**updates, where.push_repo: gr.update(placeholder=form.default_push_repo(who.user, name, options))}
