"""The persons API: ``GET /v1/persons/<any id>``, behind a project's read key.

The id may be a user id or any anonymous id: the answer is the one person it belongs to
(see :mod:`store.persons`), with all their ids, so looking up any of them (a user id of
their own aside, see ``PersonOut.ids``) answers the same person.
"""

# No `from __future__ import annotations`: FastAPI must see the dependency's types.
import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

from clickhouse_connect.driver.client import Client
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from tracklane.collector import openapi
from tracklane.collector.body import RequestError
from tracklane.collector.read_api import path_id, read_project
from tracklane.errors import ErrorCode
from tracklane.projects import Project, Projects
from tracklane.store.persons import Person, find_person


class PersonOrders(BaseModel):
    """A person's orders in one currency: amounts are never added across currencies."""

    currency: str = Field(description="ISO 4217 code as sent, upper-cased; '' when the order "
                                      "had none or no revenue")
    orders: int = Field(ge=1)
    revenue: float = Field(description="the sum of those orders' revenue")


class PersonOut(BaseModel):
    id: str = Field(description="the person: their user id, or the anonymous id of a person "
                                "never identified")
    user_id: str | None = Field(description="their user id; null if never identified")
    ids: list[str] = Field(description=(
        "every id of the person, sorted: the user id and the anonymous ids first linked to "
        "it (devices, browsers, an alias's previous id). An alias's previous id that is "
        "also some event's user id is listed for its anonymous events, but looking it up "
        "answers that user: user ids are never merged"))
    first_seen: datetime = Field(description="their first counted event")
    last_seen: datetime = Field(description="their latest counted event")
    events: int = Field(ge=1, description="their counted events (no bots, no excluded traffic)")
    traits: dict[str, Any] = Field(description=(
        "per trait key, its value in their latest identify that set it (top-level keys "
        "merged across identifies, as Segment does; a value is replaced whole)"))
    orders: int = Field(ge=0, description="their events named one of the project's "
                                          "order_events, in every currency")
    currencies: list[PersonOrders] = Field(description="their orders per currency, by code "
                                                       "('' first)")


class PersonFound(BaseModel):
    success: Literal[True]
    person: PersonOut


def persons_router(projects: Projects, store: Client | None) -> APIRouter:
    router = APIRouter(prefix="/v1/persons", tags=["persons"])

    def auth(request: Request) -> Project:
        # A dependency runs first: without a valid key, nothing about the id is checked.
        return read_project(request, projects)

    # `:path`, so that ids holding a slash (sent as %2F) reach the handler, and so does an
    # empty one, for a 400 rather than a 404.
    @router.get("/{person_id:path}", response_model=PersonFound, responses=openapi.PERSON_RESPONSES)
    async def get_person(project: Annotated[Project, Depends(auth)],
                         person_id: str) -> PersonFound:
        """One person, by their user id or any of their anonymous ids."""
        client = path_id(person_id, "id", ErrorCode.INVALID_PERSON_ID, store)
        found = await asyncio.to_thread(find_person, client, project.id, person_id,
                                        project.order_events)
        if found is None:
            raise RequestError(ErrorCode.PERSON_NOT_FOUND, "no person has this id in the project")
        return PersonFound(success=True, person=_out(found))

    return router


def _out(person: Person) -> PersonOut:
    return PersonOut(
        id=person.id, user_id=person.user_id, ids=list(person.ids),
        first_seen=person.first_seen, last_seen=person.last_seen, events=person.events,
        traits=person.traits, orders=person.orders,
        currencies=[PersonOrders(currency=c.currency, orders=c.orders, revenue=float(c.revenue))
                    for c in person.currencies],
    )
