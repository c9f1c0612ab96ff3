"""Creating, finding, cancelling and answering runs; reading run steps.

Everything here happens inside the request's transaction. The executor
(:mod:`assistantd.runs.executor`) does the rest in the background.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from assistantd import ids
from assistantd.api.dependencies import one_or_404
from assistantd.api.errors import APIError, invalid, not_found
from assistantd.api.pagination import PageParams, paginate
from assistantd.api.types import dump_response_format, dump_tools
from assistantd.assistants import service as assistants
from assistantd.db.models import Message, Run, RunStep, Thread
from assistantd.db.rows import columns_of, load_detached, new_row
from assistantd.runs import states
from assistantd.runs.schemas import (
    CreateRunRequest,
    CreateThreadAndRunRequest,
    SubmitToolOutputsRequest,
)
from assistantd.runs.states import RunStatus, StepStatus
from assistantd.runs.store import Writes
from assistantd.threads import service as threads


# Statements on every request's path are built once, with bound parameters (see api.dependencies.OneOfTenant).
_RUN = select(Run).where(Run.id == bindparam("run_id"), Run.thread_id == bindparam("thread_id"),
                         Run.tenant == bindparam("tenant"))
_STEP = select(RunStep).where(RunStep.id == bindparam("step_id"), RunStep.run_id == bindparam("run_id"),
                              RunStep.thread_id == bindparam("thread_id"), RunStep.tenant == bindparam("tenant"))
_LOCK_THREAD = select(Thread.id).where(Thread.id == bindparam("thread_id")).with_for_update()
# (the active statuses as OR-ed equalities, not an IN: _THREAD_FOR_RUN reads it through load_detached,
# which takes no expanding IN)
_ACTIVE_RUN = select(Run.id).where(Run.thread_id == bindparam("thread_id"),
                                   or_(*(Run.status == status for status in states.ACTIVE))).limit(1)
_LAST_MESSAGE_SEQ = select(func.coalesce(func.max(Message.seq), 0)).where(Message.thread_id == bindparam("thread_id"))


async def get(session: AsyncSession, tenant: str, thread_id: str, run_id: str) -> Run:
    """The run of that thread of that tenant, or the 404 of the thread or of the run."""
    return await one_or_404(session, _RUN, {"run_id": run_id, "thread_id": thread_id, "tenant": tenant},
                            lambda: not_found("run", run_id), lambda: threads.get(session, tenant, thread_id))


# On SQLite, where writers take turns, the thread, its active run and its last message are read
# in one statement (run creation's three reads otherwise).
_THREAD_FOR_RUN = select(*columns_of(Thread), _ACTIVE_RUN.scalar_subquery(),
                         _LAST_MESSAGE_SEQ.scalar_subquery()).where(Thread.id == bindparam("thread_id"),
                                                                    Thread.tenant == bindparam("tenant"))


async def require_no_active_run(session: AsyncSession, thread_id: str, action: str) -> None:
    # Lock the thread row so that racing run creations and message additions on one thread take
    # turns: otherwise each sees no active run and two start. SQLite needs no lock (one writer).
    if session.get_bind().dialect.name != "sqlite":
        await session.execute(_LOCK_THREAD, {"thread_id": thread_id})
    _refuse_active(await session.scalar(_ACTIVE_RUN, {"thread_id": thread_id}), thread_id, action)


def _refuse_active(active: str | None, thread_id: str, action: str) -> None:
    if active is not None:
        raise invalid(f"Can't {action} {thread_id} while a run {active} is active.")


async def thread_for_run(session: AsyncSession, tenant: str, thread_id: str) -> tuple[Thread, int]:
    """The thread a run is about to be created on (refused while another run on it is active),
    and the seq of its last message. On SQLite the thread is detached (read only)."""
    if session.get_bind().dialect.name == "sqlite":
        rows = await load_detached(session, Thread, _THREAD_FOR_RUN, {"thread_id": thread_id, "tenant": tenant})
        if not rows:
            raise not_found("thread", thread_id)
        thread, active, last_seq = rows[0]
        _refuse_active(active, thread_id, "create runs on")
        return thread, last_seq
    # PostgreSQL: the lock must come first, so that the reads after it see a racing creation.
    thread = await threads.get(session, tenant, thread_id)
    await require_no_active_run(session, thread_id, "create runs on")
    return thread, await session.scalar(_LAST_MESSAGE_SEQ, {"thread_id": thread_id})


def _check_tool_choice(choice: Any, tools: list[dict[str, Any]]) -> None:
    if choice is None or isinstance(choice, str):
        if choice == "required" and not tools:
            raise invalid("tool_choice 'required' needs at least one tool.", param="tool_choice")
        return
    if choice.type == "function":
        names = {t["function"]["name"] for t in tools if t["type"] == "function"}
        if choice.function is None or choice.function.name not in names:
            raise invalid("Invalid 'tool_choice': the named function is not among the run's tools.",
                          param="tool_choice.function.name")
    elif choice.type not in {t["type"] for t in tools}:
        raise invalid(f"Invalid 'tool_choice': the {choice.type} tool is not enabled for this run.",
                      param="tool_choice.type")


async def create(writes: Writes, tenant: str, thread: Thread, last_seq: int,
                 body: CreateRunRequest | CreateThreadAndRunRequest, expiry_seconds: int,
                 include_search_content: bool = False,
                 before_insert: Callable[[Run], Awaitable[None]] | None = None) -> Run:
    """Queue a run on ``thread`` (from :func:`thread_for_run`, or just made, whose last message
    is ``last_seq``). ``before_insert(run)``: what to do once the run is known, before its row
    is written (send its first model request)."""
    session = writes.session
    assistant = await assistants.get.detached(session, tenant, body.assistant_id)
    given = body.model_fields_set
    tools = dump_tools(body.tools) if body.tools is not None else assistant.tools
    _check_tool_choice(body.tool_choice, tools)
    instructions = body.instructions if body.instructions is not None else (assistant.instructions or "")
    extra = getattr(body, "additional_instructions", None)
    if extra:
        instructions = f"{instructions}\n\n{extra}" if instructions else extra
    history_seq = last_seq or 0
    for i, message in enumerate(getattr(body, "additional_messages", None) or []):
        added = await threads.add_message(session, tenant, thread, message, param=f"additional_messages[{i}]")
        history_seq = added.seq
    created = ids.now()
    run = new_row(
        Run,
        id=ids.new_id("run_"),
        tenant=tenant,
        created_at=created,
        thread_id=thread.id,
        assistant_id=assistant.id,
        status=RunStatus.QUEUED.value,
        required_action=None,
        last_error=None,
        expires_at=created + expiry_seconds,
        started_at=None,
        cancelled_at=None,
        failed_at=None,
        completed_at=None,
        incomplete_details=None,
        model=body.model or assistant.model,
        instructions=instructions,
        tools=tools,
        tool_resources=assistant.tool_resources,
        metadata_=body.metadata or {},
        usage=None,
        temperature=body.temperature if "temperature" in given else assistant.temperature,
        top_p=body.top_p if "top_p" in given else assistant.top_p,
        max_prompt_tokens=body.max_prompt_tokens,
        max_completion_tokens=body.max_completion_tokens,
        truncation_strategy=(body.truncation_strategy.model_dump() if body.truncation_strategy
                             else {"type": "auto", "last_messages": None}),
        tool_choice=(body.tool_choice if isinstance(body.tool_choice, str) or body.tool_choice is None
                     else body.tool_choice.model_dump(exclude_none=True)),
        parallel_tool_calls=body.parallel_tool_calls,
        response_format=(dump_response_format(body.response_format) if "response_format" in given
                         else assistant.response_format),
        reasoning_effort=body.reasoning_effort if "reasoning_effort" in given else assistant.reasoning_effort,
        history_seq=history_seq,
        worker=None,
        lease_until=None,
        include_search_content=include_search_content,
    )
    if before_insert is not None:
        await before_insert(run)
    await writes.insert(run)
    return run


async def create_thread_and_run(writes: Writes, tenant: str, body: CreateThreadAndRunRequest,
                                expiry_seconds: int,
                                before_insert: Callable[[Run], Awaitable[None]] | None = None) -> tuple[Thread, Run]:
    from assistantd.threads.schemas import CreateThreadRequest

    thread_body = body.thread or CreateThreadRequest()
    if body.tool_resources is not None and thread_body.tool_resources is None:
        thread_body = thread_body.model_copy(update={"tool_resources": body.tool_resources})
    thread = await threads.create(writes.session, tenant, thread_body)
    last_seq = await writes.session.scalar(_LAST_MESSAGE_SEQ, {"thread_id": thread.id})
    return thread, await create(writes, tenant, thread, last_seq, body, expiry_seconds, before_insert=before_insert)


async def list_page(session: AsyncSession, thread: Thread, page: PageParams):
    """``thread``: the tenant's thread, as its loader found it."""
    query = select(Run).where(Run.thread_id == thread.id, Run.tenant == thread.tenant)
    return await paginate(session, query, Run, page)


async def cancel(writes: Writes, run: Run) -> bool:
    """Cancel ``run``; return True when an executor must be told (the run is executing).

    A run nobody executes (queued, or waiting for tool outputs) is cancelled at once; an
    executing one becomes ``cancelling``, a durable flag its executor acts on.
    """
    for _ in range(3):  # a run that moved meanwhile (claimed, ended) is looked at again
        if run.status in (RunStatus.QUEUED, RunStatus.REQUIRES_ACTION):
            if await writes.end(run, RunStatus.CANCELLED, expect=(run.status,)):
                return False
        elif run.status == RunStatus.IN_PROGRESS:
            if await writes.move(run, RunStatus.CANCELLING):
                return True
        elif run.status == RunStatus.CANCELLING:
            return True
        else:
            break
        run_id, run = run.id, await writes.fresh(run)
        if run is None:
            raise not_found("run", run_id)
    raise invalid(f"Cannot cancel run with status '{run.status}'.")


async def submit_tool_outputs(writes: Writes, run: Run, body: SubmitToolOutputsRequest,
                              expiry_seconds: int) -> RunStep:
    """Record the outputs on the waiting step and queue the run again."""
    if run.status != RunStatus.REQUIRES_ACTION or not run.required_action:
        raise invalid(f"Runs in status \"{run.status}\" do not accept tool outputs.")
    if run.expires_at is not None and ids.now() >= run.expires_at:
        raise invalid("This run has expired and no longer accepts tool outputs.")
    pending = [c["id"] for c in run.required_action["submit_tool_outputs"]["tool_calls"]]
    outputs: dict[str, str] = {}
    for i, item in enumerate(body.tool_outputs):
        if not item.tool_call_id:
            raise invalid("Missing required parameter: 'tool_outputs[%d].tool_call_id'." % i,
                          param=f"tool_outputs[{i}].tool_call_id")
        if item.tool_call_id not in pending:
            raise invalid(f"Invalid 'tool_outputs[{i}].tool_call_id': no tool call with id "
                          f"'{item.tool_call_id}' is waiting for output.", param=f"tool_outputs[{i}].tool_call_id")
        if item.tool_call_id in outputs:
            raise invalid(f"Invalid 'tool_outputs': tool call '{item.tool_call_id}' is answered more than once.",
                          param=f"tool_outputs[{i}].tool_call_id")
        outputs[item.tool_call_id] = item.output or ""
    missing = [call_id for call_id in pending if call_id not in outputs]
    if missing:
        raise invalid(f"Expected tool outputs for call_ids {pending}, got {list(outputs)}.",
                      param="tool_outputs")
    step = await writes.last_open_tool_step(run)
    if step is None:
        raise APIError(500, "The run's tool-call step is missing.", type="server_error")
    calls = []
    for call in step.step_details["tool_calls"]:
        if call["type"] == "function" and call["id"] in outputs:
            call = {**call, "function": {**call["function"], "output": outputs[call["id"]]}}
        calls.append(call)
    now = ids.now()
    step.step_details = {**step.step_details, "tool_calls": calls}
    step.status, step.completed_at = StepStatus.COMPLETED, now
    # Not announced: the stream a request opens here starts with this ``thread.run.queued`` itself
    # (it subscribes after this write), and no other stream of the run's new stretch can exist.
    if not await writes.move(run, RunStatus.QUEUED, announce=False, required_action=None,
                             expires_at=now + expiry_seconds):
        raise invalid("The run is no longer waiting for tool outputs.")
    await writes.save(step, "step_details", "status", "completed_at")
    return step


async def list_steps(session: AsyncSession, run: Run, page: PageParams):
    """``run``: the tenant's run, as its loader found it."""
    query = select(RunStep).where(RunStep.run_id == run.id, RunStep.tenant == run.tenant)
    return await paginate(session, query, RunStep, page)


async def get_step(session: AsyncSession, tenant: str, thread_id: str, run_id: str, step_id: str) -> RunStep:
    """The step of that run of that thread of that tenant, or the 404 of the first one missing."""
    params = {"step_id": step_id, "run_id": run_id, "thread_id": thread_id, "tenant": tenant}
    return await one_or_404(session, _STEP, params, lambda: not_found("run step", step_id),
                            lambda: get(session, tenant, thread_id, run_id))
