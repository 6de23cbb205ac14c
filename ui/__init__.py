"""Helpers for the web UI (app.py): looking models up on the Hub, reading the form,
rendering job status and reports as HTML, zipping a pushed package for download.

Nothing here converts anything or talks to Redis: jobs go through worker.api, the
checks of a model and its options are the engine's own (converters/).
"""
