"""The command API's routes (DESIGN section 5): parse and authorize the request, build a
typed command, hand it to ``PaymentCommandClient`` and turn its result or rejection into
HTTP. Headers: headers.py; Idempotency-Key and ids: idempotency.py; bodies and views:
schemas.py; rejections: errors.py.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from services.command.bootstrap import CommandRuntime
from services.command.commands import (
    BulkCreatePayments,
    BulkCreateResult,
    Command,
    CommandResult,
    CommandState,
    CreatePayment,
    ModifyPayment,
    Rejected,
)
from services.command.entrypoints.bodies import (
    COMMAND_ID_PATTERN,
    CreatePaymentRequest,
    RefundPaymentRequest,
    UpdatePaymentRequest,
)
from services.command.entrypoints.http import idempotency
from services.command.entrypoints.http.headers import IfMatch, Prefer, parse_if_match, token_header, wants_async
from services.command.entrypoints.http.idempotency import IdempotencyKey, Idempotent, fingerprint
from services.command.entrypoints.http.schemas import (
    ACCEPTED_DOC,
    COMMON_PROBLEMS,
    MODIFY_PROBLEMS,
    BatchCreateRequest,
    BatchResult,
    CommandStatus,
    problem_doc,
    written_doc,
)
from services.command.entrypoints.problems import Problem, problem_of
from services.command.temporal.client import CommandFailed, CommandPending, workflow_id
from shared.auth import SCOPE_WRITE, Principal, require_scope
from shared.http import PROBLEM_BASE, PROBLEM_CONTENT_TYPE, ProblemError, problem_response, retry_after
from shared.payment import PAYMENT_ID_PATTERN, PaymentAction
from shared.payment_view import Payment
from shared.telemetry import bind_log_context, log_context

log = logging.getLogger("payments.command.api")
router = APIRouter(prefix="/v1", tags=["commands"])
Writer = Annotated[Principal, Depends(require_scope(SCOPE_WRITE))]
PaymentId = Annotated[str, Path(pattern=PAYMENT_ID_PATTERN, description="Payment id")]


def _runtime(request: Request) -> CommandRuntime:
    return request.app.state.runtime


def _status_url(command_id: str) -> str:
    return f"/v1/commands/{command_id}"


def _accepted(command_id: str) -> JSONResponse:
    url = _status_url(command_id)
    body = CommandStatus(command_id=command_id, status=CommandState.RUNNING, status_url=url)
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=202,
                        headers={"Location": url, "Preference-Applied": "respond-async", **retry_after("command-running")})


def _rejection_response(rejection: Rejected, instance: str) -> JSONResponse:
    problem = problem_of(rejection, instance)
    return JSONResponse(problem.model_dump(exclude_none=True), status_code=problem.status,
                        media_type=PROBLEM_CONTENT_TYPE)


def _answer(result: CommandResult | BulkCreateResult, status: int, command_id: str) -> JSONResponse:
    headers = {"Command-Id": command_id, **token_header(result.consistency_token)}
    if isinstance(result, BulkCreateResult):
        return JSONResponse(BatchResult.of(result).model_dump(mode="json", exclude_none=True), status_code=status,
                            headers=headers)
    payment = result.payment
    return JSONResponse(Payment.of(payment).model_dump(mode="json"), status_code=status,
                        headers={"ETag": f'"{payment.version}"', "Location": f"/v1/payments/{payment.id}", **headers})


async def _execute(request: Request, command: Command, prefer: str | None, success_status: int) -> Response:
    """Run ``command`` through the client and answer: the result, 202, or a problem."""
    token = bind_log_context(command_id=command.command_id, organization_id=command.organization_id,
                             workflow_id=workflow_id(command.organization_id, command.command_id))
    runtime = _runtime(request)
    try:
        if wants_async(prefer):
            await runtime.commands.process_async(command)
            return _accepted(command.command_id)
        result = await runtime.commands.process(command, wait_timeout=runtime.settings.command_wait_timeout_seconds)
        return _answer(result, success_status, command.command_id)
    except Rejected as rejection:
        return _rejection_response(rejection, request.url.path)
    except CommandPending:
        return _accepted(command.command_id)
    except CommandFailed as err:
        log.warning("command failed: %s", err)
        return problem_response(503, "Service Unavailable", f"the command could not complete: {err}; retry",
                                type_=PROBLEM_BASE + "command-failed", instance=request.url.path,
                                headers=retry_after("command-failed"))
    finally:
        log_context.reset(token)


def _deadline(request: Request, expires_at: datetime | None, *where: str | int, create: bool = True) -> datetime | None:
    """The deadline the command carries (ExpiryPolicy, the rule of every door), or the 422
    a schema error gets, naming the field (``items.<i>.expires_at`` in a batch)."""
    policy, now = _runtime(request).settings.expiry_policy(), datetime.now(UTC)
    try:
        if create:
            return policy.for_create(expires_at, now)
        return policy.check(expires_at, now) if expires_at is not None else None
    except ValueError as exc:
        raise RequestValidationError([{"loc": ("body", *where, "expires_at"), "msg": str(exc),
                                       "type": "value_error"}]) from None


def _create_command(principal: Principal, body: CreatePaymentRequest, payment_id: str, command_id: str,
                    expires_at: datetime | None) -> CreatePayment:
    return CreatePayment(
        command_id=command_id, organization_id=principal.org, actor=principal.actor, payment_id=payment_id,
        user_id=body.user_id or principal.subject, amount=body.amount, currency=body.currency,
        description=body.description, metadata=body.metadata, expires_at=expires_at,
    )


@router.post(
    "/payments", status_code=201, response_model=Payment, summary="Create a payment",
    responses={**written_doc(201, "Created"), **COMMON_PROBLEMS, **ACCEPTED_DOC},
)
async def create_payment(
    body: CreatePaymentRequest, request: Request, principal: Writer,
    idempotency_key: IdempotencyKey = None, prefer: Prefer = None,
) -> Response:
    """Create a payment in status `processing` (version 1). Answers 201 with the payment,
    its `ETag` (version) and `Location`; 202 with a command status URL when asked with
    `Prefer: respond-async`."""
    request_hash = fingerprint(request, body)
    payment_id, command_id = idempotency.create_ids(principal.org, idempotency_key, body.id, request_hash)
    async with Idempotent(_runtime(request).idempotency, principal.org, idempotency_key, request_hash) as once:
        if once.replay is not None:
            return once.replay  # even once its deadline has passed: the first answer stands
        command = _create_command(principal, body, payment_id, command_id, _deadline(request, body.expires_at))
        return await once.answer(await _execute(request, command, prefer, 201))


@router.post(
    "/payments/batch", status_code=200, response_model=BatchResult, summary="Create payments in bulk",
    responses={**written_doc(200, "One result per item"), **COMMON_PROBLEMS, **ACCEPTED_DOC},
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
    request_hash = fingerprint(request, body)
    batch_id = idempotency.batch_command_id(principal.org, idempotency_key)
    async with Idempotent(_runtime(request).idempotency, principal.org, idempotency_key, request_hash) as once:
        if once.replay is not None:
            return once.replay
        items = [_create_command(principal, item, *idempotency.batch_item_ids(batch_id, index, bool(idempotency_key),
                                                                              item.id),
                                 _deadline(request, item.expires_at, "items", index))
                 for index, item in enumerate(body.items)]
        command = BulkCreatePayments(command_id=batch_id, organization_id=principal.org, actor=principal.actor,
                                     items=items)
        return await once.answer(await _execute(request, command, prefer, 200))


async def _modify(
    request: Request, principal: Principal, action: PaymentAction, payment_id: str,
    if_match: str | None, idempotency_key: str | None, prefer: str | None,
    body: UpdatePaymentRequest | RefundPaymentRequest | None = None,
) -> Response:
    expected = parse_if_match(if_match)
    request_hash = fingerprint(request, body, "if-match")
    command_id = idempotency.modify_command_id(action, payment_id, idempotency_key, expected, request_hash)
    fields = body.model_dump(exclude_unset=True) if body is not None else {}
    async with Idempotent(_runtime(request).idempotency, principal.org, idempotency_key, request_hash) as once:
        if once.replay is not None:
            return once.replay
        if "expires_at" in fields:
            fields["expires_at"] = _deadline(request, fields["expires_at"], create=False)
        command = ModifyPayment(command_id=command_id, organization_id=principal.org, actor=principal.actor,
                                action=action, payment_id=payment_id, expected_version=expected, **fields)
        return await once.answer(await _execute(request, command, prefer, 200))


@router.patch(
    "/payments/{payment_id}", response_model=Payment, summary="Update a processing payment",
    responses={**written_doc(200, "Updated"), **MODIFY_PROBLEMS, **ACCEPTED_DOC},
)
async def update_payment(
    payment_id: PaymentId, body: UpdatePaymentRequest, request: Request, principal: Writer,
    if_match: IfMatch = None, idempotency_key: IdempotencyKey = None, prefer: Prefer = None,
) -> Response:
    """Change amount, description and/or metadata while the payment is `processing`.
    Send `If-Match` with the version you read: a stale version is a 412 and nothing changes."""
    return await _modify(request, principal, PaymentAction.UPDATE, payment_id, if_match, idempotency_key,
                         prefer, body)


def _transition_route(action: PaymentAction, summary: str) -> None:
    async def transition(
        payment_id: PaymentId, request: Request, principal: Writer,
        if_match: IfMatch = None, idempotency_key: IdempotencyKey = None, prefer: Prefer = None,
    ) -> Response:
        return await _modify(request, principal, action, payment_id, if_match, idempotency_key, prefer)

    transition.__doc__ = f"{summary}. Illegal in the payment's current status: 409."
    router.add_api_route(
        f"/payments/{{payment_id}}/{action}", transition, methods=["POST"], response_model=Payment,
        summary=summary, name=f"{action}_payment",
        responses={**written_doc(200, "Done"), **MODIFY_PROBLEMS, **ACCEPTED_DOC},
    )


_transition_route(PaymentAction.COMPLETE, "Complete a processing payment")
_transition_route(PaymentAction.FAIL, "Mark a processing payment failed")
_transition_route(PaymentAction.CANCEL, "Cancel a processing payment")
_transition_route(PaymentAction.REFUND, "Refund all that is left of a completed or partially refunded payment")


@router.post(
    "/payments/{payment_id}/refunds", response_model=Payment, summary="Refund part of a payment",
    responses={**written_doc(200, "Refunded: the payment with its refunds"), **MODIFY_PROBLEMS, **ACCEPTED_DOC},
)
async def refund_payment(
    payment_id: PaymentId, body: RefundPaymentRequest, request: Request, principal: Writer,
    if_match: IfMatch = None, idempotency_key: IdempotencyKey = None, prefer: Prefer = None,
) -> Response:
    """Refund `amount` of a `completed` or `partially_refunded` payment: it is
    `partially_refunded` until its refunds add up to its amount, then `refunded`. A refund
    beyond what is left is a 409 whose `remaining` says what is left; refunds of one payment
    run one after the other, so together they never exceed its amount. Send an
    `Idempotency-Key` to retry safely: without one, a repeated request is another refund."""
    return await _modify(request, principal, PaymentAction.REFUND, payment_id, if_match, idempotency_key,
                         prefer, body)


@router.delete(
    "/payments/{payment_id}", response_model=Payment, summary="Delete a payment (soft)",
    responses={**written_doc(200, "Deleted"), **MODIFY_PROBLEMS, **ACCEPTED_DOC},
)
async def delete_payment(
    payment_id: PaymentId, request: Request, principal: Writer,
    if_match: IfMatch = None, idempotency_key: IdempotencyKey = None, prefer: Prefer = None,
) -> Response:
    """Soft-delete a payment (refused for completed and refunded payments: 409). Answers
    with the deleted payment (`deleted_at` set)."""
    return await _modify(request, principal, PaymentAction.DELETE, payment_id, if_match, idempotency_key, prefer)


@router.get(
    "/commands/{command_id}", response_model=CommandStatus, summary="Status of a command",
    responses={**written_doc(200, "The command's state (Consistency-Token once completed)"),
               401: COMMON_PROBLEMS[401], 403: COMMON_PROBLEMS[403],
               404: problem_doc("No such command in your organization"),
               422: COMMON_PROBLEMS[422]},
)
async def command_status(
    command_id: Annotated[str, Path(pattern=COMMAND_ID_PATTERN, description="Command id")],
    request: Request, principal: Writer,
) -> JSONResponse:
    """`running`, `completed` with the `result` (the payment, or the batch results) and the
    `Consistency-Token` header, or `failed` with the `problem` the synchronous call would have answered."""
    found = await _runtime(request).commands.status(principal.org, command_id)
    if found is None:
        raise ProblemError(404, "Not Found", f"no command {command_id!r}", type_="command-not-found")
    state, value = found
    status = CommandStatus(command_id=command_id, status=state, status_url=_status_url(command_id))
    if isinstance(value, Rejected):
        status.problem = problem_of(value)
    elif isinstance(value, CommandFailed):
        status.problem = Problem(title="Command failed", status=500, detail=str(value))
    elif isinstance(value, BulkCreateResult):
        status.result = BatchResult.of(value)
    elif value is not None:
        status.result = Payment.of(value.payment)
    token = value.consistency_token if isinstance(value, CommandResult | BulkCreateResult) else None
    return JSONResponse(status.model_dump(mode="json", exclude_none=True), headers=token_header(token))
