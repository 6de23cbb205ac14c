"""A job's status as the app reads it: `JobStatus`, what `api.status()` returns.

The worker writes a job's progress, report and outcome into the job's meta (JSON in Redis,
never pickled); `api.status()` reads that meta and rq's own status into one `JobStatus`.
`to_dict()` gives the same data as JSON (the keys are the fields' names) and `from_dict()`
reads it back, so a status can cross a process or a test as plain data.

The report and its validation stay the JSON the engine wrote (`report`, `validation`); the
typed reading of them is `converters.report.ConversionReport` (`conversion_report`,
`validation_report` below). Light imports only (no torch): the web process reads this.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from converters.report import ConversionReport, ValidationReport

from .states import ErrorKind, JobState


@dataclass
class Links:
    """Where the push landed (worker/hub.py `Pushed.links`): the repo, the commit, and the pull
    request when the push opened one. None: not pushed (or not that kind of push)."""

    repo: str | None = None
    commit: str | None = None
    pull_request: str | None = None

    @classmethod
    def from_dict(cls, data: dict | None) -> Links:
        data = data or {}
        return cls(repo=data.get("repo"), commit=data.get("commit"), pull_request=data.get("pull_request"))

    def to_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass
class KeptPackage:
    """The zip a worker kept when the Hub refused a push after the package passed its checks
    (worker/kept.py): its file name, size and when it expires (ISO)."""

    file: str
    size_bytes: int | None = None
    expires_at: str | None = None

    @classmethod
    def from_dict(cls, data: dict | None) -> KeptPackage | None:
        if not data:
            return None
        return cls(file=str(data.get("file") or ""), size_bytes=data.get("size_bytes"), expires_at=data.get("expires_at"))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class JobStatus:
    """Everything the app shows about a job."""

    job_id: str
    state: JobState | str = JobState.UNKNOWN  # a state from a newer service stays as its string
    queue: str | None = None
    queue_position: int | None = None  # 1 = next; None unless queued
    stage: str = "queued"  # worker/progress.py STAGES, or "cancelled"
    percent: int | float = 0
    message: str = ""
    log: list[str] = field(default_factory=list)  # the last lines (empty in `recent_jobs`)
    user: str | None = None
    model: str | None = None  # the source's Hub ID
    task: str | None = None  # the task asked for ("auto" until resolved; the report says which)
    options: dict = field(default_factory=dict)  # ConversionOptions.to_dict() of the request
    push_target: str | None = None
    push_kind: str | None = None  # worker/spec.py: a new repo, a pull request, ...
    submitted_at: str | None = None  # ISO
    started_at: str | None = None
    ended_at: str | None = None
    elapsed_seconds: float | None = None
    report: dict | None = None  # the engine's report (JSON), once converted
    validation: dict | None = None  # its validation section, once validated
    links: Links = field(default_factory=Links)
    pushed: bool = False
    error: str | None = None  # what to do, in words (None when cancelled)
    error_kind: ErrorKind | str | None = None  # a kind from a newer worker stays as its string
    user_error: bool = False
    cancelled: bool = False
    retrying: bool = False  # waiting to retry an unavailable Hub (the message says so)
    retries: int = 0
    note: str | None = None  # e.g. no worker serves this queue
    kept_package: KeptPackage | None = None  # while its zip can be downloaded from this service

    # --- JSON ---------------------------------------------------------------------------

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(links=self.links.to_dict(), log=list(self.log), options=dict(self.options),
                    kept_package=self.kept_package.to_dict() if self.kept_package else None)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> JobStatus:
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values.update(
            state=state_of(data.get("state")),
            error_kind=error_kind_of(data.get("error_kind")),
            links=Links.from_dict(data.get("links")),
            kept_package=KeptPackage.from_dict(data.get("kept_package")),
            log=list(data.get("log") or []),
            options=dict(data.get("options") or {}),
        )
        return cls(**values)

    # --- what readers ask -------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Queued or running: it may still change."""
        return self.state in (JobState.QUEUED, JobState.RUNNING)

    @property
    def validation_json(self) -> dict | None:
        """The job's validation section: its own entry, else its report's."""
        return self.validation or (self.report or {}).get("validation")

    @property
    def validation_report(self) -> ValidationReport:
        return ValidationReport.from_json(self.validation_json)

    @property
    def conversion_report(self) -> ConversionReport | None:
        return ConversionReport.from_json(self.report) if self.report else None

    @property
    def requested_options(self) -> dict:
        """The options the job was asked with (else its report's: an older job)."""
        return self.options or (self.report or {}).get("options") or {}

    @property
    def resolved_task(self) -> str | None:
        """The task as the job names it, else its report's."""
        return self.task or (self.report or {}).get("task")

    def owned_by(self, user: str | None) -> bool:
        """Whether `user` may see the job (a job with no user is anyone's)."""
        return not self.user or self.user == user


def state_of(value) -> JobState | str:
    """A state as a JobState (a value from a newer service stays as it is; none: unknown)."""
    try:
        return JobState(value) if value else JobState.UNKNOWN
    except ValueError:
        return value


def error_kind_of(value) -> ErrorKind | str | None:
    """meta's error_kind as an ErrorKind (a value from a newer worker stays as it is)."""
    try:
        return ErrorKind(value) if value else None
    except ValueError:
        return value


@dataclass
class TryStatus:
    """Everything the app shows about a try (`api.try_status`)."""

    state: str  # queued | running | finished | failed | unknown
    position: int | None = None  # queued: 1 = next among the tries
    waiting_for: str | None = None  # queued: what it waits for, in words ("1 try ahead")
    progress: dict | None = None  # running: {"message": "The package: 9 of 16 tokens", "fraction": 0 to 1}
    result: dict | None = None  # finished: the package's answer beside PyTorch's (converters/try_it.py)
    error: str | None = None  # failed or unknown: what happened, in the user's words

    @property
    def ended(self) -> bool:
        return self.state in ("finished", "failed", "cancelled", "unknown")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TryStatus:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})
