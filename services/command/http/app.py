"""The command HTTP API (DESIGN section 5, port 8001).

Thin: parse and authorize the request, build a typed command, hand it to the
``PaymentCommandClient`` facade, and turn its result or rejection into HTTP. Idempotency-Key
records live in PostgreSQL; workflow ids are deterministic, so a retried request
attaches to (or returns the result of) the first one instead of running again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Request
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.command.bootstrap import CommandRuntime, command_runtime, ops_checks
from services.command.commands import (
    COMMAND_ID_PATTERN,
    PAYMENT_ID_PATTERN,
    BatchCreateRequest,
    BatchResult,
    BulkCreatePayments,
    Command,
    CommandResult,
    CommandState,
    CommandStatus,
    CreatePayment,
    CreatePaymentRequest,
    ModifyPayment,
    Problem,
    UpdatePaymentRequest,
)
from services.command.config import CommandSettings
from services.command.domain import Rejected
from services.command.handlers import problem_of
from services.command.temporal.client import CommandFailed, CommandPending, workflow_id
from shared.auth import SCOPE_WRITE, Authenticate, Principal, require_scope
from shared.http import (
    PROBLEM_BASE,
    PROBLEM_CONTENT_TYPE,
    ProblemError,
    install_health_routes,
    install_problem_handlers,
    problem_response,
)
from shared.payment import PaymentCommand
from shared.payment_view import Payment
from shared.telemetry import bind_log_context, log_context

log = logging.getLogger("payments.command.api")
MAX_BODY_BYTES = 1 << 20
_ID_NAMESPACE = uuid.UUID("3f8a4f8e-5d1c-4c3e-9a43-6f1f2b8c9d01")
# If-Match: `*`, a version `3`, or its ETag `"3"` / `W/"3"`; the OpenAPI pattern is this one.
IF_MATCH_PATTERN = r'^\s*(?:\*|(?:W/)?(?:"([1-9]\d{0,8})"|([1-9]\d{0,8})))\s*$'
_ETAG_RE = re.compile(IF_MATCH_PATTERN)

router = APIRouter(prefix="/v1", tags=["commands"])
Writer = Annotated[Principal, Depends(require_scope(SCOPE_WRITE))]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=255,
           description="Same key + same body replays the first response; a different body is a 409"),
]
Prefer = Annotated[str | None, Header(description="`respond-async`: answer 202 with a command status URL")]
IfMatch = Annotated[
    str | None,
    Header(alias="If-Match", description="Expected payment version: `3` or the ETag form `\"3\"`; 412 if stale",
           json_schema_extra={"type": "string", "pattern": IF_MATCH_PATTERN}),
]
PaymentId = Annotated[str, Path(pattern=PAYMENT_ID_PATTERN, description="Payment id")]


def _problem_doc(status: int, description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description,
            "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}


COMMON_PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: _problem_doc(400, "Malformed JSON body or a malformed If-Match header"),
    401: _problem_doc(401, "Missing or invalid bearer token"),
    403: _problem_doc(403, "The token lacks the payments:write scope"),
    409: _problem_doc(409, "Conflict: illegal status transition, id taken, or Idempotency-Key reused"),
    413: _problem_doc(413, "Request body larger than 1 MiB"),
    422: _problem_doc(422, "Invalid request or command (detail says which field and why)"),
}
MODIFY_PROBLEMS = {**COMMON_PROBLEMS, 404: _problem_doc(404, "No such payment in your organization"),
                   412: _problem_doc(412, "If-Match does not match the payment's version")}
TOKEN_HEADER_DOC = {"Consistency-Token": {
    "description": "Opaque token naming this write: pass it as `consistent_with` to the query API (search, "
                   "get, statistics) to get an answer that reflects it (read-your-writes)",
    "schema": {"type": "string"}}}


def _written_doc(status: int, description: str) -> dict[int | str, dict[str, Any]]:
    return {status: {"description": description, "headers": TOKEN_HEADER_DOC}}


ACCEPTED_DOC = {202: {"model": CommandStatus, "description": "Accepted (Prefer: respond-async, or still running)"}}


# --------------------------------------------------------------------------- helpers


def _runtime(request: Request) -> CommandRuntime:
    return request.app.state.runtime


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _wants_async(prefer: str | None) -> bool:
    return bool(prefer) and any(
        token.split("=")[0].strip().lower() == "respond-async" for token in re.split(r"[;,]", prefer or "")
    )


def parse_if_match(value: str | None) -> int | None:
    match = _ETAG_RE.match(value) if value is not None else None
    if value is None or (match and not (match.group(1) or match.group(2))):
        return None  # absent, or `*`
    if match is None:
        raise ProblemError(400, "Bad Request", f"If-Match must be a payment version such as 3 or \"3\", got {value!r}",
                           type_="invalid-if-match")
    return int(match.group(1) or match.group(2))


def _status_url(command_id: str) -> str:
    return f"/v1/commands/{command_id}"


CONSISTENCY_HEADER = "Consistency-Token"


def _token_header(token: str | None) -> dict[str, str]:
    """Send it back as `consistent_with` to the query API to read this write."""
    return {CONSISTENCY_HEADER: token} if token else {}


def _payment_response(result: CommandResult, status: int, command_id: str) -> JSONResponse:
    payment = result.payment
    return JSONResponse(
        Payment.of(payment).model_dump(mode="json"), status_code=status,
        headers={"ETag": f'"{payment.version}"', "Location": f"/v1/payments/{payment.id}",
                 "Command-Id": command_id, **_token_header(result.consistency_token)},
    )


def _accepted(command_id: str) -> JSONResponse:
    url = _status_url(command_id)
    body = CommandStatus(command_id=command_id, status=CommandState.RUNNING, status_url=url)
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=202,
                        headers={"Location": url, "Preference-Applied": "respond-async", "Retry-After": "1"})


def _rejection_response(rejection: Rejected, instance: str) -> JSONResponse:
    problem = problem_of(rejection, instance)
    return JSONResponse(problem.model_dump(exclude_none=True), status_code=problem.status,
                        media_type=PROBLEM_CONTENT_TYPE)


async def _execute(request: Request, command: Command, prefer: str | None, success_status: int) -> Response:
    token = bind_log_context(command_id=command.command_id, organization_id=command.organization_id,
                             workflow_id=workflow_id(command.organization_id, command.command_id))
    try:
        return await _run(request, command, prefer, success_status)
    finally:
        log_context.reset(token)


async def _run(request: Request, command: Command, prefer: str | None, success_status: int) -> Response:
    runtime = _runtime(request)
    service = runtime.service
    if _wants_async(prefer):
        await service.process_async(command)
        return _accepted(command.command_id)
    try:
        result = await service.process(command, wait_timeout=runtime.settings.command_wait_timeout_seconds)
    except Rejected as rejection:
        return _rejection_response(rejection, request.url.path)
    except CommandPending:
        return _accepted(command.command_id)
    except CommandFailed as err:
        log.warning("command failed: %s", err)
        return problem_response(503, "Service Unavailable", f"the command could not complete: {err}; retry",
                                type_=PROBLEM_BASE + "command-failed", instance=request.url.path,
                                headers={"Retry-After": "1"})
    if isinstance(result, BatchResult):
        return JSONResponse(result.model_dump(mode="json", exclude_none=True), status_code=success_status,
                            headers={"Command-Id": command.command_id, **_token_header(result.consistency_token)})
    return _payment_response(result, success_status, command.command_id)


async def _idempotent(
    request: Request, org: str, key: str | None, fingerprint: str, run: Callable[[], Awaitable[Response]]
) -> Response:
    """Replay the stored response for (org, key) or run and store it (2xx and 4xx)."""
    if key is None:
        return await run()
    store = _runtime(request).store
    record = await store.claim_idempotency_key(org, key, fingerprint)
    if record is not None:
        if record.request_hash != fingerprint:
            raise ProblemError(409, "Idempotency-Key reused",
                               "this Idempotency-Key was already used with a different request; use a new key",
                               type_="idempotency-key-reused")
        if record.complete:
            return Response(record.body, status_code=record.status_code,
                            headers={**record.headers, "Idempotent-Replayed": "true"})
        # The first request is still in flight: the deterministic workflow id makes this
        # one attach to it and return the same result.
    try:
        response = await run()
    except BaseException:
        await store.release_idempotency_key(org, key)
        raise
    if response.status_code >= 500:
        await store.release_idempotency_key(org, key)
    elif response.status_code == 202:
        # Still running: the key stays claimed but unanswered, so a retry attaches to the
        # same workflow and gets the final answer instead of this 202 again.
        pass
    else:
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        await store.save_idempotent_response(org, key, response.status_code, bytes(response.body), headers)
    return response


def _fingerprint(request: Request, body: Any, *headers: str) -> str:
    payload = body.model_dump(mode="json", exclude_unset=True) if body is not None else None
    return _digest(request.method, request.url.path, payload, [request.headers.get(h) for h in headers])


# --------------------------------------------------------------------------- routes


@router.post(
    "/payments", status_code=201, response_model=Payment, summary="Create a payment",
    responses={**_written_doc(201, "Created"), **COMMON_PROBLEMS, **ACCEPTED_DOC},
)
async def create_payment(
    body: CreatePaymentRequest, request: Request, principal: Writer,
    idempotency_key: IdempotencyKey = None, prefer: Prefer = None,
) -> Response:
    """Create a payment in status `processing` (version 1). Answers 201 with the payment,
    its `ETag` (version) and `Location`; 202 with a command status URL when asked with
    `Prefer: respond-async`."""
    fingerprint = _fingerprint(request, body)
    payment_id = body.id or (
        str(uuid.uuid5(_ID_NAMESPACE, f"{principal.org}\n{idempotency_key}")) if idempotency_key
        else str(uuid.uuid4())
    )
    command = _create_command(principal, body, payment_id, f"create-{payment_id}-{fingerprint[:12]}")
    return await _idempotent(request, principal.org, idempotency_key, fingerprint,
                             lambda: _execute(request, command, prefer, 201))


def _create_command(principal: Principal, body: CreatePaymentRequest, payment_id: str, command_id: str) -> CreatePayment:
    return CreatePayment(
        command_id=command_id, organization_id=principal.org, payment_id=payment_id,
        user_id=body.user_id or principal.subject, amount=body.amount, currency=body.currency,
        description=body.description, metadata=body.metadata,
    )


@router.post(
    "/payments/batch", status_code=200, response_model=BatchResult, summary="Create payments in bulk",
    responses={**_written_doc(200, "One result per item"), **COMMON_PROBLEMS, **ACCEPTED_DOC},
)
async def create_batch(
    body: BatchCreateRequest, request: Request, principal: Writer,
    idempotency_key: IdempotencyKey = None, prefer: Prefer = None,
) -> Response:
    """Create up to `PAYMENTS_COMMAND_MAX_BATCH_ITEMS` payments; one result per item
    (`status` 201 with the payment, or the item's problem). A body that fails schema
    validation is rejected whole (422) and nothing is written."""
    limit = _runtime(request).settings.command_max_batch_items
    if len(body.items) > limit:
        raise ProblemError(422, "Unprocessable Content", f"a batch holds at most {limit} items, got {len(body.items)}",
                           type_="validation-error")
    fingerprint = _fingerprint(request, body)
    batch_id = f"batch-{_digest(principal.org, idempotency_key)[:24]}" if idempotency_key else f"batch-{uuid.uuid4().hex}"
    items = []
    for index, item in enumerate(body.items):
        payment_id = item.id or (str(uuid.uuid5(_ID_NAMESPACE, f"{batch_id}\n{index}")) if idempotency_key
                                 else str(uuid.uuid4()))
        items.append(_create_command(principal, item, payment_id, f"{batch_id}.{index}"))
    command = BulkCreatePayments(command_id=batch_id, organization_id=principal.org, items=items)
    return await _idempotent(request, principal.org, idempotency_key, fingerprint,
                             lambda: _execute(request, command, prefer, 200))


async def _modify(
    request: Request, principal: Principal, action: PaymentCommand, payment_id: str,
    if_match: str | None, idempotency_key: str | None, prefer: str | None,
    body: UpdatePaymentRequest | None = None,
) -> Response:
    expected = parse_if_match(if_match)
    fingerprint = _fingerprint(request, body, "if-match")
    if idempotency_key:
        command_id = f"{action}-{payment_id}-k{_digest(idempotency_key)[:16]}"
    elif expected is not None:
        command_id = f"{action}-{payment_id}-v{expected}-{fingerprint[:12]}"
    else:
        # Nothing identifies a retry: a fresh command (a repeated transition is then
        # honestly refused as illegal rather than answered with a stale first result).
        command_id = f"{action}-{payment_id}-{uuid.uuid4().hex}"
    fields = body.model_dump(exclude_unset=True) if body is not None else {}
    command = ModifyPayment(command_id=command_id, organization_id=principal.org, action=action,
                            payment_id=payment_id, expected_version=expected, **fields)
    return await _idempotent(request, principal.org, idempotency_key, fingerprint,
                             lambda: _execute(request, command, prefer, 200))


@router.patch(
    "/payments/{payment_id}", response_model=Payment, summary="Update a processing payment",
    responses={**_written_doc(200, "Updated"), **MODIFY_PROBLEMS, **ACCEPTED_DOC},
)
async def update_payment(
    payment_id: PaymentId, body: UpdatePaymentRequest, request: Request, principal: Writer,
    if_match: IfMatch = None, idempotency_key: IdempotencyKey = None, prefer: Prefer = None,
) -> Response:
    """Change amount, description and/or metadata while the payment is `processing`.
    Send `If-Match` with the version you read: a stale version is a 412 and nothing changes."""
    return await _modify(request, principal, PaymentCommand.UPDATE, payment_id, if_match, idempotency_key,
                         prefer, body)


def _transition_route(action: PaymentCommand, summary: str) -> None:
    async def transition(
        payment_id: PaymentId, request: Request, principal: Writer,
        if_match: IfMatch = None, idempotency_key: IdempotencyKey = None, prefer: Prefer = None,
    ) -> Response:
        return await _modify(request, principal, action, payment_id, if_match, idempotency_key, prefer)

    transition.__doc__ = f"{summary}. Illegal in the payment's current status: 409."
    router.add_api_route(
        f"/payments/{{payment_id}}/{action}", transition, methods=["POST"], response_model=Payment,
        summary=summary, name=f"{action}_payment",
        responses={**_written_doc(200, "Done"), **MODIFY_PROBLEMS, **ACCEPTED_DOC},
    )


_transition_route(PaymentCommand.COMPLETE, "Complete a processing payment")
_transition_route(PaymentCommand.FAIL, "Mark a processing payment failed")
_transition_route(PaymentCommand.CANCEL, "Cancel a processing payment")
_transition_route(PaymentCommand.REFUND, "Refund a completed payment")


@router.delete(
    "/payments/{payment_id}", response_model=Payment, summary="Delete a payment (soft)",
    responses={**_written_doc(200, "Deleted"), **MODIFY_PROBLEMS, **ACCEPTED_DOC},
)
async def delete_payment(
    payment_id: PaymentId, request: Request, principal: Writer,
    if_match: IfMatch = None, idempotency_key: IdempotencyKey = None, prefer: Prefer = None,
) -> Response:
    """Soft-delete a payment (refused for completed and refunded payments: 409). Answers
    with the deleted payment (`deleted_at` set)."""
    return await _modify(request, principal, PaymentCommand.DELETE, payment_id, if_match, idempotency_key, prefer)


@router.get(
    "/commands/{command_id}", response_model=CommandStatus, summary="Status of a command",
    responses={**_written_doc(200, "The command's state (Consistency-Token once completed)"),
               401: COMMON_PROBLEMS[401], 403: COMMON_PROBLEMS[403],
               404: _problem_doc(404, "No such command in your organization"),
               422: COMMON_PROBLEMS[422]},
)
async def command_status(
    command_id: Annotated[str, Path(pattern=COMMAND_ID_PATTERN, description="Command id")],
    request: Request, principal: Writer,
) -> JSONResponse:
    """`running`, `completed` with the `result` (the payment, or the batch results) and the
    `Consistency-Token` header, or `failed` with the `problem` the synchronous call would have answered."""
    found = await _runtime(request).service.status(principal.org, command_id)
    if found is None:
        raise ProblemError(404, "Not Found", f"no command {command_id!r}", type_="command-not-found")
    state, value = found
    status = CommandStatus(command_id=command_id, status=state, status_url=_status_url(command_id))
    if isinstance(value, Rejected):
        status.problem = problem_of(value)
    elif isinstance(value, CommandFailed):
        status.problem = Problem(title="Command failed", status=500, detail=str(value))
    elif isinstance(value, BatchResult):
        status.result = value
    elif value is not None:
        status.result = Payment.of(value.payment)
    token = value.consistency_token if isinstance(value, CommandResult | BatchResult) else None
    return JSONResponse(status.model_dump(mode="json", exclude_none=True), headers=_token_header(token))


# --------------------------------------------------------------------------- app


class BodyLimit:
    """Answer 413 once a body crosses ``limit`` bytes: at once when Content-Length says
    so, otherwise as soon as the streamed (chunked) body does, without reading the rest.
    Plain ASGI: no per-request task group like ``@app.middleware``."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _too_large(self, scope: Scope) -> Response:
        return problem_response(413, "Content Too Large", f"request bodies are limited to {self.limit} bytes",
                                type_=PROBLEM_BASE + "body-too-large", instance=scope["path"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            await self._too_large(scope)(scope, receive, send)
            return
        received = 0
        refused = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit and not started:
                    # Answer now; the app sees a disconnect and its own answer is dropped.
                    refused = True
                    await self._too_large(scope)(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)


def create_app(settings: CommandSettings | None = None, runtime: CommandRuntime | None = None) -> FastAPI:
    """The ASGI app. With ``runtime`` (tests, benchmark) it uses that; otherwise its
    lifespan opens one from ``settings`` (pool, migrations, client, embedded worker)."""
    settings = settings or (runtime.settings if runtime else CommandSettings())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runtime is not None:
            yield
            return
        async with command_runtime(settings) as opened:
            app.state.runtime = opened
            yield

    app = FastAPIOffline(  # /docs and /redoc assets served locally, not from a CDN
        title="Payments command API",
        version="1.0.0",
        description="Commands on payments (create, update, transitions, delete, batch), run as Temporal "
        "workflows and written with their events in one PostgreSQL transaction. Errors are RFC 9457 "
        "problem+json. Auth: `Authorization: Bearer <JWT>` with `org` and `scope: payments:write`.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    if runtime is not None:
        app.state.runtime = runtime
    install_problem_handlers(app)

    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(Authenticate)  # outermost: no token, no body read

    async def check(name: str) -> None:
        await ops_checks(app.state.runtime)[name]()

    install_health_routes(app, {"postgres": lambda: check("postgres"), "temporal": lambda: check("temporal")})
    app.include_router(router)
    app.openapi = lambda: _openapi(app, settings)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI, settings: CommandSettings) -> dict[str, Any]:
    """FastAPI's document, with the limits that come from settings (not the models)."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        batch = schema["components"]["schemas"]["BatchCreateRequest"]["properties"]["items"]
        batch["maxItems"] = min(batch["maxItems"], settings.command_max_batch_items)
        app.openapi_schema = schema
    return app.openapi_schema


def app_factory() -> FastAPI:
    """uvicorn ``--factory`` entry: settings from the environment."""
    return create_app(CommandSettings())
