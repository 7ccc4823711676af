"""Persons: one person across the anonymous ids and the user id they send.

The ``identities`` table (migration 0013) links anonymous ids to user ids. It is filled
incrementally from the events that carry both ids: an ``identify``, any other event sent
after login, and an ``alias``, whose ``previousId`` is linked like an anonymous id. The
queries resolve every event's person at query time, so a link also claims the events
sent before it, and no event is ever rewritten.

The rules, in order:

1. An event with a user id belongs to that user. User ids are never remapped, so two
   known users are never merged, not by ``identify`` and not by ``alias`` (PostHog's
   rule): ``alias`` only claims ``previousId``'s anonymous events.
2. An event with only an anonymous id belongs to the user that anonymous id was first
   linked to, by event time (ties by user id, so arrival order never changes an answer).
   Several anonymous ids (phone, laptop, a second browser) can join one user.
3. Otherwise the anonymous id is the person.

A shared browser identified as ``u1``, reset, then identified as ``u2`` has two anonymous
ids and yields two persons. Without the reset the one anonymous id stays ``u1``'s: its
anonymous events count for ``u1`` and only the events carrying ``u2`` count for ``u2``.

Every query also leaves out what is not a person's traffic: bots and the project's
excluded (internal or test) events, :data:`COUNTED`.
"""

from __future__ import annotations

# The filter every analytics query puts on raw events.
COUNTED = "is_bot = 0 AND excluded = ''"

# Per anonymous id of project %(p)s, the user it was first linked to.
LINKS = """
SELECT anonymous_id, argMinMerge(user_id) AS linked_user
FROM identities WHERE project_id = %(p)s GROUP BY anonymous_id
"""

# A row's person, given its user_id and anonymous_id and the joined ``linked_user``.
PERSON = "if(user_id != '', user_id, if(linked_user != '', linked_user, anonymous_id))"

IDENTITY_JOIN = f"LEFT ANY JOIN ({LINKS}) AS identity USING (anonymous_id)"


def counted_events(where: str, columns: str = "*") -> str:
    """The counted events of project %(p)s matching ``where``, each with its ``person``.

    ``where`` should bound ``timestamp`` so the scan uses the table's date key.
    """
    return (f"SELECT {columns}, {PERSON} AS person FROM events {IDENTITY_JOIN} "
            f"WHERE project_id = %(p)s AND {COUNTED} AND ({where})")
