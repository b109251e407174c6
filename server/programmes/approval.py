"""A programme's approval life: draft → submitted → approved (or rejected) → archived.

Pure data and one function. Only an approved programme airs. Any edit of a programme's
content sends it back to draft (it stops airing until approved again): what an approver
signed off is exactly what plays. An archived programme is kept for the record and is
never edited again.

    action   from                               to
    submit   draft, rejected                    submitted
    approve  submitted                          approved
    reject   submitted                          rejected   (a reason is required)
    archive  draft, submitted, approved, rejected  archived
    edit     draft, submitted, approved, rejected  draft
"""

from __future__ import annotations

import enum

from loaxa_protocol.errors import LoaxaError


class ProgrammeState(enum.StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"
    ARCHIVED = "archived"


class ApprovalAction(enum.StrEnum):
    SUBMIT = "submit"
    APPROVE = "approve"
    REJECT = "reject"
    ARCHIVE = "archive"
    EDIT = "edit"


S, A = ProgrammeState, ApprovalAction
TRANSITIONS: dict[ApprovalAction, tuple[frozenset[ProgrammeState], ProgrammeState]] = {
    A.SUBMIT: (frozenset({S.DRAFT, S.REJECTED}), S.SUBMITTED),
    A.APPROVE: (frozenset({S.SUBMITTED}), S.APPROVED),
    A.REJECT: (frozenset({S.SUBMITTED}), S.REJECTED),
    A.ARCHIVE: (frozenset({S.DRAFT, S.SUBMITTED, S.APPROVED, S.REJECTED}), S.ARCHIVED),
    A.EDIT: (frozenset({S.DRAFT, S.SUBMITTED, S.APPROVED, S.REJECTED}), S.DRAFT),
}

ON_AIR = frozenset({S.APPROVED})
"""States in which a programme's occurrences are in station plans."""
OCCUPYING = frozenset({S.DRAFT, S.SUBMITTED, S.APPROVED})
"""States whose occurrences count for the overlap check (rejected and archived do not)."""


class ApprovalError(LoaxaError, ValueError):
    """An action the programme's state does not allow; the message names both."""


def transition(state: ProgrammeState, action: ApprovalAction) -> ProgrammeState:
    """The state after ``action``, or :class:`ApprovalError` naming what is possible."""
    sources, target = TRANSITIONS[action]
    if state not in sources:
        possible = sorted(a.value for a, (src, _) in TRANSITIONS.items() if state in src)
        raise ApprovalError(
            f"cannot {action.value} a programme that is {state.value}; "
            f"possible: {', '.join(possible) or 'nothing (it is archived)'}"
        )
    return target
