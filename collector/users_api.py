"""The erasure API: ``DELETE /v1/users/<user id>``, behind a project's read key.

Erases the user from the key's project only (see :mod:`store.erasure`): the whole person
of ``GET /v1/persons/<user id>``, every id of theirs, and the links between those ids in
``identities``. Answers when it is done. Erasing an id with no events succeeds with zero
counts, and is audited too: whether a user was ever seen is not revealed by the status.
"""

# No `from __future__ import annotations`: FastAPI must see the dependency's types.
import asyncio
import hashlib
import logging
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from clickhouse_connect.driver.client import Client
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from tracklane.clock import Clock
from tracklane.collector import openapi
from tracklane.collector.body import RequestError
from tracklane.collector.read_api import path_id, read_project
from tracklane.errors import ErrorCode
from tracklane.projects import Project, Projects
from tracklane.store.erasure import erase_user

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Caller:
    project: Project
    key_fingerprint: str


class ErasureDone(BaseModel):
    """The user's data is gone from the project; an audit row records it."""

    success: Literal[True]
    erasure_id: str = Field(description="the audit row's id (a UUID)")
    events_deleted: int = Field(ge=0, description="raw events deleted")
    anonymous_ids_erased: int = Field(
        ge=0, description="anonymous ids first linked to the user (devices, browsers, "
                          "alias previous ids), whose anonymous events went too")
    days_rebuilt: int = Field(ge=0, description="days whose aggregates were rebuilt")
    minutes_rebuilt: int = Field(ge=0, description="minutes of rollups rebuilt")
    sessions_rebuilt: int = Field(ge=0, description="(day, session) rows rebuilt")


def key_fingerprint(key: str) -> str:
    """Who asked, for the audit: a short SHA-256 of the read key, never the key."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:16]


def users_router(projects: Projects, store: Client | None, clock: Clock,
                 audit_key: bytes) -> APIRouter:
    router = APIRouter(prefix="/v1/users", tags=["users"])

    def auth(request: Request) -> Caller:
        # A dependency runs first: without a valid key, nothing about the id is checked.
        project = read_project(request, projects)
        token = request.headers.get("authorization", "").partition(" ")[2].strip()
        return Caller(project, key_fingerprint(token))

    # `:path`, so that ids holding a slash (sent as %2F) reach the handler, and so does an
    # empty one, for a 400 rather than a 404.
    @router.delete("/{user_id:path}", response_model=ErasureDone, responses=openapi.ERASE_RESPONSES)
    async def erase(caller: Annotated[Caller, Depends(auth)], user_id: str) -> dict[str, Any]:
        """Erase a user's events, their anonymous ids' events, links and aggregate shares."""
        client = path_id(user_id, "user_id", ErrorCode.INVALID_USER_ID, store)
        if not audit_key:
            raise RequestError(ErrorCode.ERASURE_UNAVAILABLE, "this collector has no secret "
                               "for the erasure audit: set TRACKLANE_SECRET")
        try:
            done = await asyncio.to_thread(
                erase_user, client, caller.project.id, user_id,
                requested_by=caller.key_fingerprint, requested_at=clock(), audit_key=audit_key)
        except Exception:
            log.exception("erasure failed", extra={"project": caller.project.id})
            raise RequestError(ErrorCode.ERASURE_FAILED, "the erasure did not complete; "
                               "retrying the same request is safe") from None
        log.info("user erased", extra={
            "project": done.project_id, "erasure_id": done.erasure_id,
            "events_deleted": done.events_deleted})
        return {
            "success": True,
            "erasure_id": done.erasure_id,
            "events_deleted": done.events_deleted,
            "anonymous_ids_erased": done.anonymous_ids,
            "days_rebuilt": done.days_rebuilt,
            "minutes_rebuilt": done.minutes_rebuilt,
            "sessions_rebuilt": done.sessions_rebuilt,
        }

    return router
