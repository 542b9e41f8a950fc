"""``/v1/webhook-endpoints`` on the command API (docs/webhooks.md): an organization's
endpoints (the signing secret shown once, at creation and rotation), its delivery log and
redelivery. Scope ``payments:webhooks``; another organization's endpoint is a 404."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.webhooks.adapters.secret_box import SecretBox, new_secret
from services.webhooks.adapters.sender import checked_target
from services.webhooks.adapters.store import EndpointLimitReached, WebhookStore
from services.webhooks.domain import EVENT_NAME_PATTERN, MAX_URL_LENGTH, UnsafeUrl, known_event_names
from services.webhooks.entrypoints.redelivery import redeliver
from services.webhooks.messages import Delivery, DeliveryStatus, Endpoint
from shared.auth import SCOPE_WEBHOOKS, Principal, require_scope
from shared.http import PROBLEM_CONTENT_TYPE, ProblemError
from shared.settings import Settings


def _problem(description: str) -> dict[str, Any]:
    # The command API's Problem schema (the app serving this router documents it).
    return {"description": description,
            "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}


PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: _problem("Malformed JSON body"),
    401: _problem("Missing or invalid bearer token"),
    403: _problem("The token lacks the payments:webhooks scope"),
    404: _problem("No such endpoint (or delivery) in your organization"),
    422: _problem("Invalid request: the detail names the field (a refused URL names `url`)"),
}
router = APIRouter(prefix="/v1/webhook-endpoints", tags=["webhooks"], responses=PROBLEMS)
Admin = Annotated[Principal, Depends(require_scope(SCOPE_WEBHOOKS))]
EndpointId = Annotated[str, Path(pattern=r"^we_[0-9a-f]{32}$", description="Endpoint id")]
DeliveryId = Annotated[str, Path(pattern=r"^[0-9a-f-]{36}$", description="Delivery id")]
EventName = Annotated[str, Field(pattern=EVENT_NAME_PATTERN)]
MAX_OVERLAP_SECONDS = 7 * 24 * 3600


class EndpointRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"url": "https://example.com/payments-webhooks", "events": ["payment.created", "payment.status_changed"],
         "description": "ERP"}]})

    url: str = Field(min_length=1, max_length=MAX_URL_LENGTH, description="https URL receiving the POSTs")
    events: list[EventName] = Field(min_length=1, max_length=32,
                                    description="`payment.<type>` names (`payment.created`, ...) or `*` for all")
    description: str = Field(default="", max_length=500, pattern=r"^[^\x00]*$")

    @field_validator("events")
    @classmethod
    def _known(cls, events: list[str]) -> list[str]:
        unknown = sorted(set(events) - set(known_event_names()))
        if unknown:  # a typo would subscribe to nothing, silently
            raise ValueError(f"unknown event names {unknown}; known: {', '.join(known_event_names())}")
        return events


class RotateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    overlap_seconds: float | None = Field(
        default=None, ge=0, le=MAX_OVERLAP_SECONDS,
        description="How long the old secret keeps signing too (default PAYMENTS_WEBHOOKS_ROTATION_OVERLAP_SECONDS)")


class RedeliverRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    failed_since: datetime = Field(description="Redeliver every failed delivery created since then")


class EndpointWithSecret(Endpoint):
    secret: str = Field(description="The signing secret: shown only now; verify `Payments-Signature` with it")


class EndpointList(BaseModel):
    items: list[Endpoint]


class DeliveryList(BaseModel):
    items: list[Delivery]


class Redelivered(BaseModel):
    redelivered: int


def _store(request: Request) -> WebhookStore:
    state = request.app.state
    if getattr(state, "webhook_store", None) is None:
        state.webhook_store = WebhookStore(state.runtime.pool)
    return state.webhook_store


def _settings(request: Request) -> Settings:
    return request.app.state.runtime.settings


def _box(request: Request) -> SecretBox:
    state = request.app.state
    if getattr(state, "webhook_box", None) is None:
        state.webhook_box = SecretBox(_settings(request).webhooks_secret_key)
    return state.webhook_box


def _not_found(endpoint_id: str) -> ProblemError:
    return ProblemError(404, "Not Found", f"no webhook endpoint {endpoint_id}", type_="webhook-endpoint-not-found")


def _invalid(field: str, message: str) -> ProblemError:
    return ProblemError(422, "Unprocessable Content", f"{field}: {message}", type_="validation-error",
                        errors=[{"field": field, "message": message}])


@router.post("", status_code=201, response_model=EndpointWithSecret,
             responses={409: _problem("The organization has its maximum number of endpoints")})
async def create_endpoint(body: EndpointRequest, principal: Admin, request: Request) -> EndpointWithSecret:
    settings = _settings(request)
    try:  # the address half is checked again at each delivery (DNS may change)
        await checked_target(body.url, allow_private=settings.webhooks_allow_private)
    except UnsafeUrl as exc:
        raise _invalid("url", str(exc)) from None
    secret = new_secret()
    try:
        endpoint = await _store(request).create_endpoint(
            principal.org, body.url, body.description, sorted(set(body.events)), _box(request).seal(secret),
            limit=settings.webhooks_max_endpoints_per_org)
    except EndpointLimitReached as exc:
        raise ProblemError(409, "Conflict", str(exc), type_="webhook-endpoint-limit") from None
    return EndpointWithSecret(**endpoint.model_dump(), secret=secret)


@router.get("", response_model=EndpointList)
async def list_endpoints(principal: Admin, request: Request) -> EndpointList:
    return EndpointList(items=await _store(request).endpoints(principal.org))


@router.get("/{endpoint_id}", response_model=Endpoint)
async def get_endpoint(endpoint_id: EndpointId, principal: Admin, request: Request) -> Endpoint:
    found = await _store(request).endpoint(principal.org, endpoint_id)
    if found is None:
        raise _not_found(endpoint_id)
    return found


@router.delete("/{endpoint_id}", status_code=204)
async def delete_endpoint(endpoint_id: EndpointId, principal: Admin, request: Request) -> Response:
    if not await _store(request).delete_endpoint(principal.org, endpoint_id):
        raise _not_found(endpoint_id)
    return Response(status_code=204)


async def _set_enabled(request: Request, org: str, endpoint_id: str, enabled: bool) -> Endpoint:
    found = await _store(request).set_enabled(org, endpoint_id, enabled, None if enabled else "disabled by a user")
    if found is None:
        raise _not_found(endpoint_id)
    return found


@router.post("/{endpoint_id}/disable", response_model=Endpoint)
async def disable_endpoint(endpoint_id: EndpointId, principal: Admin, request: Request) -> Endpoint:
    return await _set_enabled(request, principal.org, endpoint_id, False)


@router.post("/{endpoint_id}/enable", response_model=Endpoint)
async def enable_endpoint(endpoint_id: EndpointId, principal: Admin, request: Request) -> Endpoint:
    return await _set_enabled(request, principal.org, endpoint_id, True)


@router.post("/{endpoint_id}/rotate-secret", response_model=EndpointWithSecret)
async def rotate_secret(endpoint_id: EndpointId, principal: Admin, request: Request,
                        body: RotateRequest | None = None) -> EndpointWithSecret:
    overlap = body.overlap_seconds if body and body.overlap_seconds is not None else \
        _settings(request).webhooks_rotation_overlap_seconds
    secret = new_secret()
    found = await _store(request).rotate_secret(principal.org, endpoint_id, _box(request).seal(secret), overlap)
    if found is None:
        raise _not_found(endpoint_id)
    return EndpointWithSecret(**found.model_dump(), secret=secret)


@router.get("/{endpoint_id}/deliveries", response_model=DeliveryList)
async def list_deliveries(endpoint_id: EndpointId, principal: Admin, request: Request,
                          status: DeliveryStatus | None = None,
                          limit: Annotated[int, Query(ge=1, le=200)] = 50) -> DeliveryList:
    store = _store(request)
    if await store.endpoint(principal.org, endpoint_id) is None:
        raise _not_found(endpoint_id)
    return DeliveryList(items=await store.deliveries(principal.org, endpoint_id, limit=limit, status=status))


@router.post("/{endpoint_id}/deliveries/{delivery_id}/redeliver", status_code=202, response_model=Redelivered)
async def redeliver_one(endpoint_id: EndpointId, delivery_id: DeliveryId, principal: Admin,
                        request: Request) -> Redelivered:
    store = _store(request)
    if await store.delivery(principal.org, endpoint_id, delivery_id) is None:
        raise ProblemError(404, "Not Found", f"no delivery {delivery_id} of endpoint {endpoint_id}",
                           type_="webhook-delivery-not-found")
    count = await redeliver(store, request.app.state.runtime.temporal, _settings(request), principal.org,
                            endpoint_id, delivery_id=delivery_id)
    return Redelivered(redelivered=count)


@router.post("/{endpoint_id}/redeliver", status_code=202, response_model=Redelivered)
async def redeliver_failed(endpoint_id: EndpointId, body: RedeliverRequest, principal: Admin,
                           request: Request) -> Redelivered:
    store = _store(request)
    if await store.endpoint(principal.org, endpoint_id) is None:
        raise _not_found(endpoint_id)
    count = await redeliver(store, request.app.state.runtime.temporal, _settings(request), principal.org,
                            endpoint_id, failed_since=body.failed_since)
    return Redelivered(redelivered=count)
