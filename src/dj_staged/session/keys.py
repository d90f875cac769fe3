"""A batch's rows' keys looked up in the table off the rows' path: asked at a row's first handle, answered by
its exit.

The first row of a batch checks its key before its first byte, in the round
trip that takes the lease lock. Each later row's key is sent at its first
handle to a second database session of the batch (:class:`SideSession`, in
psycopg2's asynchronous mode), which looks it up while the row writes its
bytes; the row reads the answer at its exit, before anything is finalized. A
key found there refuses the row (DataJoint's ``DuplicateError``), which then
unwinds and the batch goes on without it. A key another session commits after
its lookup is refused by the batch's final ``INSERT``, which unwinds the whole
batch, as with DataJoint's ``insert(list)``.

The second session sees only committed rows, so inside an open transaction
(``populate``'s ``make()``) a row's key is looked up on the connection itself,
before its first byte. A second session that cannot be opened, or fails, is
given up for the rest of the batch and its rows are looked up that way too.
"""

from __future__ import annotations

import logging
from typing import Any

from .. import steps
from .._datajoint import SideSession, Table
from .rows import key_columns, key_probe

logger = logging.getLogger(__name__)


def key_in_table(table: Table, key: dict[str, Any]) -> bool:
    """Whether a row with ``key`` is in ``table``, seen by the table's own connection (one round trip); False for
    a key whose values do not convert to the column types (the insert refuses it with DataJoint's error)."""
    probe = key_probe(table, key)
    if probe is None:
        return False
    return bool(table.connection.query(f"SELECT ({probe[0]})", args=tuple(probe[1])).fetchone()[0])


class KeyLookout:
    """The lookups of one batch: at most one in flight, for the row being written."""

    def __init__(self, table: Table) -> None:
        self._table = table
        self._columns = key_columns(table)
        self._session: SideSession | None = None
        self._usable = True
        self._asked: tuple[Any, ...] | None = None  # the key whose answer is on its way

    def ask(self, key: dict[str, Any]) -> bool:
        """Send the lookup of ``key`` and return at once; False when it could not be sent (the caller then looks
        the key up itself)."""
        probe = key_probe(self._table, key, self._columns)
        if probe is None or not self._usable or self._table.connection.in_transaction:
            return False
        try:
            if self._session is None:
                self._session = SideSession(self._table.connection)
            self._session.send(f"SELECT ({probe[0]})", tuple(probe[1]))
        except Exception:
            self._give_up()
            return False
        self._asked = tuple(probe[1])
        return True

    def found(self, key: dict[str, Any]) -> bool:
        """Whether ``key``, asked by :meth:`ask`, is in the table: its answer, waited for if it has not come; looked
        up on the table's connection if the second session failed meanwhile."""
        asked, self._asked = self._asked, None
        answer = None
        if self._session is not None and asked is not None:
            try:
                answer = bool(self._session.answer())
            except Exception:
                self._give_up()
        if answer is None:
            answer = key_in_table(self._table, key)
        steps.reach("writer.key", key=dict(key), found=answer)
        return answer

    def _give_up(self) -> None:
        logger.info("The batch's second database session failed; its rows' keys are looked up one by one")
        self._usable = False
        self.close()

    def close(self) -> None:
        """End the second session (a lookup still on its way is dropped)."""
        session, self._session = self._session, None
        if session is not None:
            try:
                session.close()
            except Exception:
                logger.debug("Closing the batch's second database session failed", exc_info=True)
