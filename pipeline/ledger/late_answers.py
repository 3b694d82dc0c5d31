"""Where a paid answer goes when its job is no longer (only) its caller's (SPEC §6, never pay twice).

A worker's lease on a job can run out while its call is in flight (a slow
call, a stalled event loop, a ledger outage); another worker may then take
the job over and pay for it again. The first answer, when it arrives, has
been paid for: it is recorded all the same, never thrown away.

- The job has no answer yet and is not finished (pending, running, or
  withdrawn from its manifest since): the answer becomes the job's, and its
  caller takes the job back (the worker that held it can no
  longer send a request for it; one already sent is paid, and its answer
  comes here as an extra).
- The job has an answer already (another attempt's), or is finished: both
  attempts were paid. The answer is an **extra** one: its cost is counted in
  the job's cost and the manifest's spend, and its images (and descriptions)
  are added to the job's results, numbered after the ones it has, and
  downloaded; the job is left as it is (it completes once, and its `then:`
  stages follow its own answer only).

`sort_answers` makes that choice for a batch of answers; the ledger's
`record_responses` writes it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pipeline.ledger.records import Response
from pipeline.ledger.tables import PENDING, RUNNING, WITHDRAWN

#: the attempt's message when its answer was added to a job that had one
EXTRA_MESSAGE = (
    "an extra paid answer: the job's lease had passed to another worker while this call was in flight"
)


class JobRow(Protocol):
    """The columns of a job row the choice needs."""

    @property
    def lease_owner(self) -> str | None: ...

    @property
    def state(self) -> str: ...

    @property
    def response_at(self) -> float | None: ...


@dataclass
class SortedAnswers:
    """A batch of answers sorted by where each goes."""

    #: the job's own answer, the job still leased to the caller
    own: list[Response] = field(default_factory=list)
    #: the job's own answer, the job taken back by the caller
    taken: list[Response] = field(default_factory=list)
    #: answers added to a job that has one
    extra: list[Response] = field(default_factory=list)
    #: answers recorded already (the write ran again after a commit whose reply was lost)
    again: list[Response] = field(default_factory=list)


def sort_answers(
    owner: str,
    responses: Sequence[Response],
    rows: Mapping[int, JobRow],
    answered_attempts: Collection[int],
) -> SortedAnswers:
    """Sort ``responses`` (in the order they came) by where each goes; jobs not in ``rows`` are left out."""
    answers = SortedAnswers()
    has_answer = {job_id: row.response_at is not None for job_id, row in rows.items()}
    for response in responses:
        row = rows.get(response.job_id)
        if row is None:
            continue
        if response.attempt_id is not None and response.attempt_id in answered_attempts:
            answers.again.append(response)
        elif has_answer[response.job_id] or row.state not in (PENDING, RUNNING, WITHDRAWN):
            answers.extra.append(response)
        elif row.state == RUNNING and row.lease_owner == owner:
            answers.own.append(response)
        else:
            answers.taken.append(response)
        has_answer[response.job_id] = True
    return answers


def results_count(response: Response) -> int:
    """How many numbered results (images, or descriptions) an answer adds to its job."""
    return max(len(response.result.images), len(response.result.descriptions))
