"""Re-encrypting stored secrets under the newest key (``agentmesh secrets rotate``).

Each service that stores ciphertexts registers an ``agentmesh.secrets`` entry point: an
async function, called without arguments, that reads its settings from the environment,
re-encrypts its rows and returns ``{what: rows rewritten}``. This module holds the loop
they share.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute

from agentmesh.shared.crypto import SecretBox

#: Rows locked and rewritten per transaction.
BATCH_SIZE = 200


async def reencrypt_column(
    sessionmaker: async_sessionmaker[AsyncSession],
    box: SecretBox,
    id_column: InstrumentedAttribute[Any],
    column: InstrumentedAttribute[Any],
    *,
    batch_size: int = BATCH_SIZE,
) -> int:
    """Rewrite every non-null ``column`` not made with ``box``'s newest key; returns how many.

    Batches in id order, each in its own short transaction with the rows locked, so a
    concurrent update of one row is never lost and no transaction lasts long. Pure
    database work: nothing here waits on the network while a row is locked."""
    table = column.class_
    rewritten = 0
    last_id: Any = None
    while True:
        async with sessionmaker() as session, session.begin():
            query = (
                select(id_column, column)
                .where(column.is_not(None))
                .order_by(id_column)
                .limit(batch_size)
                .with_for_update()
            )
            if last_id is not None:
                query = query.where(id_column > last_id)
            rows = (await session.execute(query)).all()
            for row_id, ciphertext in rows:
                if box.needs_rotation(bytes(ciphertext)):
                    await session.execute(
                        update(table)
                        .where(id_column == row_id)
                        .values({column.key: box.rotate(bytes(ciphertext))})
                    )
                    rewritten += 1
        if len(rows) < batch_size:
            return rewritten
        last_id = rows[-1][0]
