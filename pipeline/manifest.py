"""The manifest (SPEC §4): pydantic models, loading, and the settings it implies.

`load_manifest` parses the YAML with line numbers and validates its structure;
`pipeline.validation` then checks requests and sources against the provider's
schema. Both report every problem as ``file:line: field.path: message``.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)
from yarl import URL

from pipeline import endpoints
from pipeline.durations import parse_duration
from pipeline.errors import ManifestError, Problem
from pipeline.suggestions import did_you_mean, did_you_mean_nested
from pipeline.yaml_loader import LineMap, dotted, load_with_lines
from pipeline.yaml_loader import Path as DataPath

DEFAULT_CONCURRENCY = 8
DEFAULT_ATTEMPTS = 6
DEFAULT_BACKOFF_INITIAL_S = 1.0
DEFAULT_BACKOFF_MAX_S = 60.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_READ_TIMEOUT_S = 120.0
DEFAULT_GIVE_UP_AFTER_S = 30 * 60.0
#: the deadline of one image download (a produced image, or a URL source fetched to upload it)
DEFAULT_DOWNLOAD_TIMEOUT_S = 120.0
DEFAULT_NAME_TEMPLATE = "{op}/{slug}-{key}-{index}.{ext}"
#: the largest budget (USD) and price per image (USD) taken: beyond, a typo (the ledger keeps
#: money as 64-bit micro-dollars)
MAX_BUDGET_USD = 1_000_000_000.0
MAX_PRICE_USD = 1_000_000.0
#: a manifest text larger than this is refused (jobs belong in prompts/catalog files)
MAX_MANIFEST_BYTES = 5 * 1024 * 1024

PROVIDERS: dict[str, tuple[str, str]] = {
    # kind: (base_url, api_key_env)
    "crazyrouter": ("https://crazyrouter.com", "CRAZYROUTER_API_KEY"),
    "ideogram": ("https://api.ideogram.ai", "IDEOGRAM_API_KEY"),
}

Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def checked_base_url(value: str) -> str:
    """``value`` without a trailing slash, or ValueError saying why it cannot be an API base URL."""
    if not re.match(r"^https?://[^\s/]+", value):
        raise ValueError("base_url must be an http:// or https:// URL")
    try:
        url = URL(value)
        url.port  # noqa: B018 - a port that does not parse raises here
    except ValueError:
        raise ValueError("base_url is not a URL that parses (check the host and port)") from None
    if url.user is not None or url.password is not None:
        # The key comes from its environment variable; a URL's user:password would be
        # printed in messages, logs and the ledger's provider list.
        raise ValueError(
            "base_url must not hold a user name or password; put the key in the variable api_key_env names"
        )
    if url.query_string or url.fragment:
        raise ValueError("base_url must not have a query (?...) or fragment (#...)")
    return value.rstrip("/")


class ProviderConfig(_Section):
    """Which API dialect to speak, where, and which environment variable holds the key."""

    kind: Literal["crazyrouter", "ideogram"] = "crazyrouter"
    base_url: StrictStr | None = None
    api_key_env: Annotated[StrictStr, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    image_encoding: Literal["auto", "url", "multipart"] = "auto"

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return None if value is None else checked_base_url(value)

    @property
    def url(self) -> str:
        """The base URL, the provider's default when unset."""
        return self.base_url or PROVIDERS[self.kind][0]

    @property
    def key_env(self) -> str:
        """The environment variable holding the API key."""
        return self.api_key_env or PROVIDERS[self.kind][1]


class OutputConfig(_Section):
    """Where images land and how they are named."""

    dir: StrictStr = "out/{name}"
    name: StrictStr = DEFAULT_NAME_TEMPLATE


class LimitsConfig(_Section):
    """How hard to push: images in flight, requests per minute, money."""

    concurrency: Annotated[StrictInt, Field(ge=1, le=10_000)] = DEFAULT_CONCURRENCY
    requests_per_minute: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    budget_usd: Annotated[float, Field(ge=0, le=MAX_BUDGET_USD, allow_inf_nan=False)] | None = None
    #: `account`: `concurrency` is the provider account's cap, shared through the ledger by every
    #: process with the same base_url and key variable; `process`: each process's own
    scope: Literal["account", "process"] = "account"


class RetryConfig(_Section):
    """Attempts per job and the exponential backoff between them."""

    attempts: Annotated[StrictInt, Field(ge=1, le=100)] = DEFAULT_ATTEMPTS
    initial: Duration = DEFAULT_BACKOFF_INITIAL_S
    max: Duration = DEFAULT_BACKOFF_MAX_S
    #: a run that gets nothing but 429s for this long stops (exit 3): a 429 is not an attempt
    give_up_after: Duration = DEFAULT_GIVE_UP_AFTER_S
    #: how long a ledger that stops answering is waited for before the run stops (exit 5);
    #: unset: ``IDEOBATCH_LEDGER_RETRY``, else 60 s
    ledger_retry: Duration | None = None


class TimeoutsConfig(_Section):
    """HTTP timeouts: of one API call (connect, read), and the deadline of one download."""

    connect: Duration = DEFAULT_CONNECT_TIMEOUT_S
    read: Duration = DEFAULT_READ_TIMEOUT_S
    #: all of one image download, start to last byte (redirects included)
    download: Annotated[Duration, Field(gt=0)] = DEFAULT_DOWNLOAD_TIMEOUT_S


class StageSpec(BaseModel):
    """A `then:` stage: a job template fed by each result of its parent."""

    model_config = ConfigDict(extra="allow", frozen=True)

    op: StrictStr
    prompt: StrictStr | None = None
    matrix: dict[str, list[Any]] | None = None
    repeat: Annotated[StrictInt, Field(ge=1, le=10_000)] = 1
    then: list[StageSpec] | None = None

    @field_validator("op")
    @classmethod
    def _known_op(cls, value: str) -> str:
        if value not in endpoints.ops():
            raise ValueError(endpoints.unknown_op_message(value))
        return value

    @property
    def params(self) -> dict[str, Any]:
        """The request fields written on this job (everything that is not a job key)."""
        return dict(self.model_extra or {})


class JobSpec(StageSpec):
    """One entry of `jobs:`; its request fields sit beside the job keys."""

    prompts: Any = None
    images: Any = None
    id: StrictStr | None = None
    #: columns (or JSONL keys) of the prompts file that are not settings: skipped
    ignore_columns: list[StrictStr] | None = None


class Manifest(BaseModel):
    """A whole manifest, structurally valid (requests and sources are checked later)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1]
    name: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    provider: ProviderConfig = ProviderConfig()
    defaults: dict[str, Any] = Field(default_factory=dict)
    output: OutputConfig = OutputConfig()
    limits: LimitsConfig = LimitsConfig()
    retry: RetryConfig = RetryConfig()
    timeouts: TimeoutsConfig = TimeoutsConfig()
    prices: dict[str, Annotated[float, Field(ge=0, le=MAX_PRICE_USD, allow_inf_nan=False)]] = Field(
        default_factory=dict
    )
    lock: StrictBool = False
    jobs: Annotated[list[JobSpec], Field(min_length=1)]


@dataclass(frozen=True)
class LoadedManifest:
    """A manifest with where it came from: file, folder, text hash and value lines."""

    manifest: Manifest
    path: Path
    lines: LineMap
    sha256: str

    @property
    def base_dir(self) -> Path:
        """The folder relative paths in the manifest are resolved against (symlinks followed)."""
        return self.path.resolve().parent

    @property
    def file(self) -> str:
        """The manifest's path as shown in messages."""
        return str(self.path)

    def line(self, path: DataPath) -> int | None:
        """The line where the value at ``path`` was written."""
        return self.lines.line_of(path)

    def problem(self, path: DataPath, message: str) -> Problem:
        """A problem located at a field of this manifest."""
        return Problem(self.file, self.line(path), dotted(path), message)

    @property
    def output_dir(self) -> Path:
        """The output folder, absolute (``{name}`` in it is the manifest's name)."""
        raw = self.manifest.output.dir.replace("{name}", self.manifest.name)
        return (self.base_dir / os.path.expanduser(raw)).resolve()


def _data_path(loc: tuple[int | str, ...], data: Any, missing: bool) -> DataPath:
    """Pydantic's error location reduced to the path that exists in the data.

    Union members and validator names appear in ``loc`` but not in the data;
    they are dropped.
    """
    path: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            path.append(part)
            node = node[part]
        elif i == len(loc) - 1 and missing and isinstance(part, str):
            path.append(part)
    return tuple(path)


def _message(err: Any) -> str:
    kind = err["type"]
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown key" + unknown_key_hint(tuple(err["loc"]))
    msg = str(err["msg"])
    return re.sub(r"^(Value error|Assertion failed), ", "", msg)


def _sections() -> dict[str, type[BaseModel]]:
    """The manifest's sections that are models of their own, by key."""
    return {
        "provider": ProviderConfig,
        "output": OutputConfig,
        "limits": LimitsConfig,
        "retry": RetryConfig,
        "timeouts": TimeoutsConfig,
    }


def unknown_key_hint(loc: tuple[int | str, ...]) -> str:
    """ "; did you mean ...?" for an unknown key of the manifest's top level or of a section."""
    sections = _sections()
    nested = {name: list(model.model_fields) for name, model in sections.items()}
    if len(loc) == 1:
        return did_you_mean_nested(loc[0], Manifest.model_fields, nested)
    if len(loc) == 2 and loc[0] in sections:
        return did_you_mean(loc[1], sections[str(loc[0])].model_fields)
    return ""


def _partial_manifest(data: dict[str, Any], errors: list[Any]) -> tuple[Manifest, set[int]] | None:
    """The manifest with its broken sections replaced by defaults, so the rest can be checked too.

    Returns the patched manifest and the indexes of jobs replaced by placeholders.
    """
    bad_sections: set[Any] = set()
    bad_jobs: set[int] = set()
    for err in errors:
        loc = tuple(err["loc"])
        if len(loc) > 1 and loc[0] == "jobs" and isinstance(loc[1], int):
            bad_jobs.add(loc[1])
        else:
            bad_sections.add(loc[0] if loc else None)
    if None in bad_sections or "jobs" in bad_sections:
        return None
    patched = {k: v for k, v in data.items() if k not in bad_sections}
    patched["version"] = 1
    patched.setdefault("name", "unnamed")
    if "name" in bad_sections:
        patched["name"] = "unnamed"
    jobs = list(patched.get("jobs") or [])
    for index in bad_jobs:
        if 0 <= index < len(jobs):
            jobs[index] = {"op": "generate", "prompt": "placeholder"}
    patched["jobs"] = jobs
    try:
        return Manifest.model_validate(patched), bad_jobs
    except ValidationError:
        return None


def parse_manifest(text: str, file: str, path: Path | None = None) -> LoadedManifest:
    """Validate the structure of a manifest text; raise `ManifestError` with every problem."""
    data, lines = load_with_lines(text, file)
    if not isinstance(data, dict):
        raise ManifestError(
            [Problem(file, 1, "", "a manifest is a mapping of keys such as version, name, jobs")]
        )
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        problems = []
        seen = set()
        for err in exc.errors(include_url=False):
            where = _data_path(tuple(err["loc"]), data, err["type"] == "missing")
            problem = Problem(file, lines.line_of(where), dotted(where), _message(err))
            if str(problem) not in seen:
                seen.add(str(problem))
                problems.append(problem)
        problems.sort(key=lambda p: (p.line or 0, p.field))
        error = ManifestError(problems)
        partial = _partial_manifest(data, exc.errors(include_url=False))
        if partial is not None:
            error.partial = LoadedManifest(partial[0], path or Path(file), lines, "")
            error.placeholder_jobs = partial[1]
        raise error from None
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return LoadedManifest(manifest, path or Path(file), lines, sha)


def load_manifest(path: str | os.PathLike[str]) -> LoadedManifest:
    """Read and structurally validate the manifest at ``path``."""
    file = Path(path)
    try:
        size = file.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise ManifestError(
                [
                    Problem(
                        str(file),
                        None,
                        "",
                        f"the manifest is {size} bytes; the limit is {MAX_MANIFEST_BYTES}",
                    )
                ]
            )
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ManifestError([Problem(str(file), None, "", "no such file")]) from None
    except IsADirectoryError:
        raise ManifestError([Problem(str(file), None, "", "is a folder, not a manifest file")]) from None
    except OSError as exc:
        raise ManifestError([Problem(str(file), None, "", f"cannot read: {exc.strerror}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(
            [Problem(str(file), None, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})")]
        ) from None
    return parse_manifest(text, str(file), file)
