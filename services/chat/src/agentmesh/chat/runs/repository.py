"""The runs domain's SQL: the database side of a run, in as few round trips as possible,
and the statements of approvals' pauses (``runs.approvals``).

One streamed turn on the conversation path costs: the conversation with its agent snapshot
and budget (1), the branch history (1), a budget reservation when a budget applies (the
member's and the workspace's in one statement: 1), the user message with the run (1),
commit (1); then at the end the assistant message with the run's usage and the budget
spend (1), the outbox event (1), commit (1).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from agentmesh.chat import metrics
from agentmesh.chat.models import WHOLE_WORKSPACE, new_id
from agentmesh.chat.runs.recording import Recording
from agentmesh.chat.state import ChatState
from agentmesh.shared.errors import AppError, problem_type
from agentmesh.shared.events.contracts import MessageCompleted

if TYPE_CHECKING:
    from agentmesh.chat.runs.executor import RunOutcome, RunPlan


def this_month() -> date:
    return datetime.now(UTC).date().replace(day=1)


@dataclass
class FinishedRun:
    plan: RunPlan
    outcome: RunOutcome
    model: str
    provider: str
    latency_ms: float
    last_event_id: int


#: A run's month is that of its ``created_at`` (UTC): its reservation goes to that month's
#: rows here (``now()`` is the time of the transaction that also inserts the run), and its
#: finish and the orphan sweep release it from those rows, even after midnight of the last
#: day of the month.
#:
#: Up to two budgets apply to a run: the member's in the workspace and the whole
#: workspace's (``user_id`` nil). Each budget's spend row is reserved by one
#: ``INSERT .. ON CONFLICT DO UPDATE .. WHERE`` of this statement: the row lock serializes
#: concurrent starts (of every member, on the workspace's row), and the ``WHERE`` is checked
#: against the newest committed spend. Rows go in a fixed order (the workspace's first), so
#: two starts never wait on each other crosswise. The run may start only when every budget
#: took the reservation (``budgets = reserved``); otherwise the transaction is rolled back
#: (``begin_run`` raises), so a refusal reserves nothing.
RESERVE = text("""
WITH wanted AS (
  SELECT workspace_id, user_id, monthly_tokens, monthly_cost_usd FROM chat.budgets
  WHERE workspace_id = :workspace_id AND user_id IN (:user_id, :whole)),
reserved AS (
  INSERT INTO chat.budget_spend AS s (workspace_id, user_id, month, tokens, cost_usd,
                                      reserved_tokens)
  SELECT workspace_id, user_id, CAST(date_trunc('month', now() AT TIME ZONE 'UTC') AS date),
         0, 0, :reserve
  FROM wanted
  WHERE (monthly_tokens IS NULL OR monthly_tokens > 0)
    AND (monthly_cost_usd IS NULL OR monthly_cost_usd > 0)
  ORDER BY user_id
  ON CONFLICT (workspace_id, user_id, month) DO UPDATE
  SET reserved_tokens = s.reserved_tokens + :reserve
  WHERE EXISTS (SELECT 1 FROM chat.budgets b
                WHERE b.workspace_id = s.workspace_id AND b.user_id = s.user_id
                AND (b.monthly_tokens IS NULL OR s.tokens + s.reserved_tokens < b.monthly_tokens)
                AND (b.monthly_cost_usd IS NULL OR s.cost_usd < b.monthly_cost_usd))
  RETURNING 1)
SELECT (SELECT count(*) FROM wanted) AS budgets, (SELECT count(*) FROM reserved) AS reserved
""")


async def reserve_budget(
    session: AsyncSession, workspace_id: uuid.UUID, user_id: uuid.UUID, tokens: int
) -> bool:
    """Atomically start a run against the member's and the workspace's monthly budgets:
    False when, for either, the tokens spent plus those in flight, or the cost spent,
    already reach the limit. Then the other budget may hold the reservation: the caller
    must roll the transaction back (``begin_run`` raises ``OverBudget``, and the request's
    session rolls back), which also ends the row locks at once."""
    row = (
        await session.execute(
            RESERVE,
            {
                "workspace_id": workspace_id,
                "user_id": user_id,
                "whole": WHOLE_WORKSPACE,
                "reserve": tokens,
            },
        )
    ).one()
    return row.reserved == row.budgets


START_TURN = text("""
WITH m AS (
  INSERT INTO chat.messages (id, conversation_id, user_id, parent_id, role, content, tool_calls,
                             status, run_id, agent_version)
  VALUES (:message_id, :conversation_id, :user_id, :parent_id, 'user', :content, '[]',
          'completed', :run_id, :agent_version)
  RETURNING id)
INSERT INTO chat.runs (id, workspace_id, user_id, conversation_id, agent_id, agent_version,
                       user_message_id, status, model, provider, input_tokens, output_tokens,
                       cost_usd, reserved_tokens, last_event_id, heartbeat_at)
SELECT :run_id, :workspace_id, :user_id, :conversation_id, :agent_id, :agent_version, m.id,
       'running', :model, :provider, 0, 0, 0, :reserved, 0, now() FROM m
RETURNING created_at
""")

START_RUN = text("""
INSERT INTO chat.runs (id, workspace_id, user_id, conversation_id, agent_id, agent_version,
                       user_message_id, status, model, provider, input_tokens, output_tokens,
                       cost_usd, reserved_tokens, last_event_id, heartbeat_at)
VALUES (:run_id, :workspace_id, :user_id, :conversation_id, :agent_id, :agent_version,
        :user_message_id, 'running', :model, :provider, 0, 0, 0, :reserved, 0, now())
""")


async def start_run(
    session: AsyncSession | AsyncConnection,
    *,
    run_id: uuid.UUID,
    workspace_id: uuid.UUID,
    user_id: uuid.UUID,
    agent_id: uuid.UUID,
    agent_version: int,
    model: str,
    reserved: int,
    conversation_id: uuid.UUID | None = None,
    user_message: tuple[uuid.UUID, uuid.UUID | None, str] | None = None,
    user_message_id: uuid.UUID | None = None,
) -> None:
    """Insert the run (and, on the conversation path, the user's message with it)."""
    params = {
        "run_id": run_id,
        "workspace_id": workspace_id,
        "user_id": user_id,
        "conversation_id": conversation_id,
        "agent_id": agent_id,
        "agent_version": agent_version,
        "model": model,
        "provider": "pending",
        "reserved": reserved,
    }
    if user_message is not None:
        message_id, parent_id, content = user_message
        params |= {"message_id": message_id, "parent_id": parent_id, "content": content}
        await session.execute(START_TURN, params)
    else:
        await session.execute(START_RUN, params | {"user_message_id": user_message_id})


async def record_run(state: ChatState, **run: Any) -> None:
    """``start_run`` in a transaction of its own: for a request that starts the model call
    without waiting for this commit (see ``RunPlan.recorded``). Its one statement runs on
    the autocommit engine, where it is that transaction: no BEGIN and COMMIT round trips."""
    async with state.reader.connect() as connection:
        await start_run(connection, **run)


class OverBudget(AppError):
    status, type, title = 402, "budget-exceeded", "Payment Required"


async def begin_run(
    state: ChatState, session: AsyncSession, *, reserve: int | None, **run: Any
) -> Recording | None:
    """Record a run about to start (``run``: ``start_run``'s fields).

    With a budget (``reserve``: the tokens to reserve), the atomic reservation and the run
    commit here, before the model call; over budget raises ``OverBudget`` (402). Without
    one, the run's commit runs alongside the model call: the returned ``Recording`` (see
    ``RunPlan.recorded``), begun once the model request is sent; the request's own
    transaction is then read-only, for the caller to end once the run has started."""
    if reserve is None:
        metrics.RUNS_STARTED.inc()
        return Recording(lambda: record_run(state, **run, reserved=0))
    if not await reserve_budget(session, run["workspace_id"], run["user_id"], reserve):
        # Raised before anything is committed: the request's transaction rolls back, with
        # any part of the reservation one of the two budgets took.
        raise OverBudget(
            "This month's budget (yours in this workspace, or the workspace's) "
            "is spent; ask an admin to raise it."
        )
    await start_run(session, **run, reserved=reserve)
    await session.commit()  # the edge: the run's own writes come after this one
    metrics.RUNS_STARTED.inc()
    return None


FINISH = """
WITH r AS (
  -- Only a run still running: one the orphan sweep already failed (this replica lost
  -- its heartbeat for too long) keeps the sweep's record, and nothing here happens twice.
  UPDATE chat.runs SET status = :status, error = CAST(:error AS jsonb), model = :model,
         provider = :provider, fallback_index = :fallback_index,
         input_tokens = :input_tokens, output_tokens = :output_tokens,
         cost_usd = :cost, latency_ms = :latency_ms, ttft_ms = :ttft_ms,
         assistant_message_id = :assistant_id, last_event_id = :last_event_id,
         finished_at = now()
  WHERE id = :run_id AND status = 'running'
  RETURNING id, created_at)
{message_cte}
, spend AS (
  UPDATE chat.budget_spend SET tokens = tokens + :total_tokens, cost_usd = cost_usd + :cost,
         reserved_tokens = GREATEST(reserved_tokens - :reserved, 0)
  -- Not only runs that reserved: one that started before a budget was set (seeded from
  -- the runs) counts too. A row exists only while its budget does: the member's in the
  -- workspace, and the whole workspace's. The run's own month (see RESERVE): a run started
  -- on the 31st at 23:59 is spent and released there, not against the month it ended in.
  WHERE workspace_id = :workspace_id AND user_id IN (:user_id, :whole)
    AND month = (SELECT CAST(date_trunc('month', created_at AT TIME ZONE 'UTC') AS date)
                 FROM r))
SELECT (SELECT count(*) FROM r) AS updated, {created} AS created_at
"""
#: The assistant message, written only when the run's own update (``r``) took effect.
MESSAGE_CTE = """, m AS (
  INSERT INTO chat.messages (id, conversation_id, user_id, parent_id, role, content, tool_calls,
                             status, run_id, agent_version, input_tokens, output_tokens,
                             citations)
  SELECT :assistant_id, :conversation_id, :user_id, :parent_id, 'assistant', :content,
         CAST(:tool_calls AS jsonb), :status, :run_id, :agent_version, :input_tokens,
         :output_tokens, CAST(:citations AS jsonb) FROM r
  RETURNING created_at)"""
NO_MESSAGE_CTE = ""


def interrupted_problem() -> dict[str, Any]:
    """``run.failed`` of a run whose replica stopped before it ended."""
    return {
        "type": problem_type("run-interrupted"),
        "title": "Run interrupted",
        "status": 503,
        "detail": "The chat replica running this answer stopped; ask again.",
    }


def not_recorded_problem() -> dict[str, Any]:
    """``run.failed`` of a run whose row (or answer) could not be saved."""
    return {
        "type": problem_type("run-not-recorded"),
        "title": "Run failed",
        "status": 503,
        "detail": "The answer could not be saved; try again.",
    }


class RunAlreadyEnded(Exception):
    """The run was no longer running when its replica came to record it: the orphan
    sweep of another replica had failed it (this one missed its heartbeats)."""


async def finish_run(
    state: ChatState, finished: FinishedRun
) -> tuple[uuid.UUID | None, datetime | None]:
    """Record the answer, the run's usage and spend, and ``chat.message.completed``, in
    one transaction. Returns the assistant message's id and creation time (None for
    stateless runs), so the answer can be returned without reading it back."""
    plan, outcome = finished.plan, finished.outcome
    conversational = plan.conversation_id is not None
    assistant_id = new_id() if conversational else None
    params: dict[str, Any] = {
        "assistant_id": assistant_id,
        "conversation_id": plan.conversation_id,
        "user_id": plan.user_id,
        "workspace_id": plan.workspace_id,
        "whole": WHOLE_WORKSPACE,
        "parent_id": plan.parent_id,
        "content": outcome.content,
        "tool_calls": json.dumps(outcome.tool_calls, default=str),
        "status": outcome.status,
        "citations": json.dumps(outcome.citations, default=str),
        "run_id": plan.run_id,
        "agent_version": plan.agent_version,
        "input_tokens": outcome.input_tokens,
        "output_tokens": outcome.output_tokens,
        "total_tokens": outcome.input_tokens + outcome.output_tokens,
        "cost": outcome.cost_usd,
        "reserved": plan.reserved_tokens,
        "error": json.dumps(outcome.error) if outcome.error else None,
        "model": finished.model,
        "provider": finished.provider,
        "fallback_index": None if outcome.served is None else outcome.served.fallback_index,
        "latency_ms": finished.latency_ms,
        "ttft_ms": outcome.ttft_ms,
        "last_event_id": finished.last_event_id,
    }
    sql = FINISH.format(
        message_cte=MESSAGE_CTE if conversational else NO_MESSAGE_CTE,
        created="(SELECT created_at FROM m)" if conversational else "NULL",
    )
    async with state.sessionmaker() as session, session.begin():
        row = (await session.execute(text(sql), params)).one()
        if not row.updated:
            raise RunAlreadyEnded(str(plan.run_id))
        await state.outbox.add(
            session,
            MessageCompleted(
                message_id=assistant_id or plan.run_id,
                conversation_id=plan.conversation_id,
                run_id=plan.run_id,
                user_id=plan.user_id,
                workspace_id=plan.workspace_id,
                agent_id=plan.agent_id,
                agent_version=plan.agent_version,
                model=finished.model,
                provider=finished.provider,
                status=outcome.status,
                input_tokens=outcome.input_tokens,
                output_tokens=outcome.output_tokens,
                cost_usd=str(outcome.cost_usd),
                latency_ms=round(finished.latency_ms, 3),
                time_to_first_token_ms=None
                if outcome.ttft_ms is None
                else round(outcome.ttft_ms, 3),
            ),
        )
    metrics.record_finish(
        status=outcome.status,
        provider=finished.provider,
        model=finished.model,
        input_tokens=outcome.input_tokens,
        output_tokens=outcome.output_tokens,
        latency_ms=finished.latency_ms,
        ttft_ms=outcome.ttft_ms,
    )
    return assistant_id, row.created_at


# ------------------------------------------------------------------ heartbeats, orphans

HEARTBEAT = text("""
UPDATE chat.runs SET heartbeat_at = now()
WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'running'
""")

#: The running runs whose replica stopped refreshing them: candidates only, read without
#: a lock, so the sweep can read their events from NATS before it opens a transaction.
FIND_ORPHANS = text("""
SELECT id FROM chat.runs
WHERE status = 'running' AND heartbeat_at < now() - make_interval(secs => :orphan_seconds)
  AND NOT (id = ANY(CAST(:local_ids AS uuid[])))
ORDER BY heartbeat_at LIMIT :limit
""")

#: Fail those of the candidates (``:ids``) still orphaned, and release their budget
#: reservations, atomically: of several replicas sweeping at once each run goes to one
#: (``FOR UPDATE SKIP LOCKED``; the row update settles any race with a late finish).
CLAIM_ORPHANS = text("""
WITH orphaned AS (
  UPDATE chat.runs r SET status = 'failed', error = CAST(:error AS jsonb),
         finished_at = now(), latency_ms = EXTRACT(EPOCH FROM now() - r.created_at) * 1000
  WHERE r.id IN (SELECT id FROM chat.runs
                 WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'running'
                   AND heartbeat_at < now() - make_interval(secs => :orphan_seconds)
                   AND NOT (id = ANY(CAST(:local_ids AS uuid[])))
                 FOR UPDATE SKIP LOCKED)
    AND r.status = 'running'
  RETURNING r.id, r.workspace_id, r.user_id, r.conversation_id, r.agent_id, r.agent_version,
            r.user_message_id, r.model, r.provider, r.reserved_tokens, r.created_at,
            r.latency_ms),
released AS (
  -- From the member's budget and from the workspace's (nil user): every run's tokens.
  UPDATE chat.budget_spend s SET reserved_tokens = GREATEST(s.reserved_tokens - o.tokens, 0)
  FROM (SELECT orphaned.workspace_id, budget.user_id,
               CAST(date_trunc('month', created_at AT TIME ZONE 'UTC') AS date) AS month,
               sum(reserved_tokens) AS tokens
        FROM orphaned CROSS JOIN LATERAL (VALUES (orphaned.user_id),
                                                 (CAST(:whole AS uuid))) AS budget(user_id)
        WHERE reserved_tokens > 0 GROUP BY 1, 2, 3) o
  WHERE s.workspace_id = o.workspace_id AND s.user_id = o.user_id AND s.month = o.month)
SELECT * FROM orphaned
""")

RECORD_ORPHAN = """
WITH r AS (
  UPDATE chat.runs SET assistant_message_id = :assistant_id, last_event_id = :last_event_id
  WHERE id = :run_id RETURNING id)
{message_cte}
SELECT 1
"""


async def heartbeat(session: AsyncSession, run_ids: list[uuid.UUID]) -> None:
    """Mark ``run_ids`` (this replica's running runs) alive, in one statement."""
    await session.execute(HEARTBEAT, {"ids": run_ids})


# ------------------------------------------------------------------ approvals' pauses

#: Store a run's pause (``runs.approvals``): the run becomes ``requires_action`` with its
#: usage so far, and its state waits in ``chat.run_pauses`` until ``:timeout`` seconds.
PAUSE = text("""
WITH r AS (
  UPDATE chat.runs SET status = 'requires_action', model = :model, provider = :provider,
         input_tokens = :input_tokens, output_tokens = :output_tokens,
         last_event_id = :last_event_id
  WHERE id = :run_id AND status = 'running'
  RETURNING id)
INSERT INTO chat.run_pauses (run_id, state, expires_at)
SELECT id, CAST(:state AS jsonb), now() + make_interval(secs => :timeout) FROM r
RETURNING run_id
""")

#: Take a paused run for the decision on ``:call_id``: of concurrent decisions (and the
#: expiry) one wins, by the pause row's lock; the run is running again from here on.
CLAIM = text("""
WITH p AS (
  DELETE FROM chat.run_pauses
  WHERE run_id = :run_id AND state -> 'calls' -> 0 ->> 'id' = :call_id
    AND EXISTS (SELECT 1 FROM chat.runs WHERE id = :run_id AND status = 'requires_action')
  RETURNING state),
r AS (
  UPDATE chat.runs SET status = 'running', heartbeat_at = now()
  WHERE id = :run_id AND status = 'requires_action' AND EXISTS (SELECT 1 FROM p)
  RETURNING id)
SELECT (SELECT state FROM p) AS state, (SELECT count(*) FROM r) AS claimed
""")


#: End paused runs (``{due}``: which) as ``:status``, atomically: the pause goes, the
#: reservation is released, and the tokens used before the pause count, as a finished
#: run's do. Of several replicas (and a decision) each pause goes to one.
END_PAUSES = """
WITH due AS ({due}),
gone AS (
  DELETE FROM chat.run_pauses p USING due WHERE p.run_id = due.run_id RETURNING p.run_id),
ended AS (
  UPDATE chat.runs r SET status = :status, error = CAST(:error AS jsonb), finished_at = now(),
         latency_ms = EXTRACT(EPOCH FROM now() - r.created_at) * 1000,
         last_event_id = r.last_event_id + 2
  WHERE r.id IN (SELECT run_id FROM gone) AND r.status = 'requires_action'
  RETURNING r.id, r.workspace_id, r.user_id, r.reserved_tokens, r.created_at,
            r.input_tokens, r.output_tokens, r.last_event_id),
released AS (
  UPDATE chat.budget_spend s SET reserved_tokens = GREATEST(s.reserved_tokens - o.tokens, 0),
         tokens = s.tokens + o.spent
  FROM (SELECT ended.workspace_id, budget.user_id,
               CAST(date_trunc('month', created_at AT TIME ZONE 'UTC') AS date) AS month,
               sum(reserved_tokens) AS tokens, sum(input_tokens + output_tokens) AS spent
        FROM ended CROSS JOIN LATERAL (VALUES (ended.user_id),
                                              (CAST(:whole AS uuid))) AS budget(user_id)
        GROUP BY 1, 2, 3) o
  WHERE s.workspace_id = o.workspace_id AND s.user_id = o.user_id AND s.month = o.month)
SELECT id, last_event_id, input_tokens, output_tokens FROM ended
"""
EXPIRE = text(
    END_PAUSES.format(
        due="""
  SELECT run_id FROM chat.run_pauses WHERE expires_at <= now()
  ORDER BY expires_at LIMIT :limit FOR UPDATE SKIP LOCKED"""
    )
)
CANCEL = text(
    END_PAUSES.format(
        due="""
  SELECT run_id FROM chat.run_pauses WHERE run_id = :run_id FOR UPDATE"""
    )
)


RUN_STATUS = text("SELECT status FROM chat.runs WHERE id = :run_id")


async def run_status(connection: AsyncConnection, run_id: uuid.UUID) -> str | None:
    """The run's status (``None``: no such run)."""
    return await connection.scalar(RUN_STATUS, {"run_id": run_id})
