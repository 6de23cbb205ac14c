"""What a running job tells the app: stage, percent, message, a log tail and timestamps,
written to the rq job's meta (the app polls it). Every text passes through `redact`, so
the user's token cannot reach Redis even if a library puts it in a message.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from datetime import datetime, timezone

# Stages in order, with the percent each one starts at.
STAGES = {
    "queued": 0,
    "resolve": 1,
    "download": 5,
    "convert": 15,
    "validate": 70,
    "package": 85,
    "push": 88,
    "cleanup": 98,
    "done": 100,
}
LOG_LINES = 50
_SAVE_INTERVAL = 0.5  # seconds between meta writes for progress within one stage


def step_of(message: str) -> str:
    """A progress message's step: its words before the first colon. What follows counts within
    the step ("Calibrating 4-bit weights (GPTQ): layer 7 of 30") and changes often."""
    return message.split(":", 1)[0]


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Redactor:
    """Replaces secrets (the user's token) in any text we store or log."""

    def __init__(self, *secrets: str | None):
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def __call__(self, text) -> str:
        text = str(text)
        for secret in self.secrets:
            text = text.replace(secret, "[token]")
        return text


class JobProgress:
    """Writes progress into `job.meta`; `job` is an rq Job (or anything with meta/save_meta)."""

    def __init__(self, job, redact: Redactor):
        self.job = job
        self.redact = redact
        self.log_tail: deque[str] = deque(job.meta.get("log") or [], maxlen=LOG_LINES)
        self._last_save = 0.0
        self._message_line: str | None = None  # the log line of the current message, while it is the last

    def stage(self, stage: str, message: str, fraction: float = 0.0) -> None:
        """Enter `stage` (fraction 0..1 of the way to the next stage); entered again, its
        percent stays where it got to (the page's bar never goes back)."""
        meta = self.job.meta
        percent = _percent(stage, fraction)
        if meta.get("stage") != stage:
            meta.setdefault("stage_started_at", {})[stage] = now_iso()
        else:
            percent = max(meta.get("percent", 0), percent)
        meta["stage"] = stage
        meta["percent"] = percent
        self.log(message, save=False)
        meta["message"] = self.redact(message)
        self.save(force=True)

    def update(self, fraction: float, message: str | None = None) -> None:
        """Progress within the current stage: a new step's message (a log line) is saved at
        once; a count within the step ("layer 7 of 30") replaces its line, and it and a percent
        alone are saved at most twice a second."""
        meta = self.job.meta
        meta["percent"] = max(meta.get("percent", 0), _percent(meta.get("stage", "queued"), fraction))
        if not message or message == meta.get("message"):
            self.save()
            return
        counting = step_of(message) == step_of(meta.get("message") or "") and self._is_last_line(self._message_line)
        if counting:
            self.log_tail.pop()
        meta["message"] = self.redact(message)
        self.log(message, save=False)
        self._message_line = self.log_tail[-1]
        self.save(force=not counting)

    def _is_last_line(self, line: str | None) -> bool:
        return line is not None and bool(self.log_tail) and self.log_tail[-1] == line

    def log(self, line: str, save: bool = True) -> None:
        stamp = datetime.now(timezone.utc).strftime("%H:%M:%S")
        for part in self.redact(line).splitlines() or [""]:
            self.log_tail.append(f"{stamp} {part}")
        self.job.meta["log"] = list(self.log_tail)
        if save:
            # At once: a throttled line could wait unsaved through a long step (a conversion
            # call of a minute) and the page would show it only after that step.
            self.save(force=True)

    def set(self, **values) -> None:
        """Store values (already free of secrets) in meta and save now."""
        self.job.meta.update(values)
        self.save(force=True)

    def save(self, force: bool = False) -> None:
        if force or time.monotonic() - self._last_save >= _SAVE_INTERVAL:
            self.job.meta["updated_at"] = now_iso()
            self.job.save_meta()
            self._last_save = time.monotonic()


def _percent(stage: str, fraction: float) -> int:
    names = list(STAGES)
    start = STAGES.get(stage, 0)
    index = names.index(stage) if stage in STAGES else 0
    end = STAGES[names[index + 1]] if index + 1 < len(names) else 100
    fraction = min(max(fraction, 0.0), 1.0)
    return int(start + (end - start) * fraction)


class LogTailHandler(logging.Handler):
    """Sends library log records (warnings and up, ours from info) to the job's log tail."""

    def __init__(self, progress: JobProgress):
        super().__init__(logging.INFO)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        ours = record.name.split(".")[0] in ("worker", "converters")
        if record.levelno < logging.WARNING and not ours:
            return
        try:
            self.progress.log(f"{record.levelname.lower()}: {record.getMessage()}")
        except Exception:  # noqa: BLE001 - logging must never break the job
            pass
