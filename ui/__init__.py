"""The web UI's parts (app.py lays the page out and wires its events to the handlers here).

The page and its handlers, one module per part of the page: page (the components by section,
the session's state), identity (who is asking; the @signed_in decorator), sign_in, model_choice,
form_checks (what the form says before Convert), jobs (queue, show, poll, cancel, My jobs),
try_panel, results (download, convert again in float32). Handlers are plain functions of the
page and the event's inputs, testable without a browser (tests/test_ui_handlers.py).

Helpers they use: models (looking models up on the Hub), form (reading the form), render (job
status and reports as HTML), package_zip (zipping a pushed package for download). Nothing here
converts anything: jobs go through worker.api, the checks of a model and its options are the
engine's own (converters/).
"""
