"""A CRM stand-in that speaks ``crm.sync``'s wire contract, for tests and the devstack.

A third-party CRM cannot run here, so this double holds contacts and deals per tenant and
answers ``POST /sync`` (also ``/api/sync``) exactly as ``sba_tools.tools.crm_sync``
documents: upsert contacts by (tenant, lowercased email) and deals by (tenant, name),
answer ``{"remoteId": "sync-<n>", "synced": {"contacts", "deals"}}``.

``Idempotency-Key`` is honoured the way payment and CRM APIs document it: the first
request with a key is applied once and its answer stored; a repeat with the same body gets
the stored answer with ``Idempotent-Replayed: true`` and changes nothing; the same key with
another body is a 422 ``idempotency_key_reused``; no key is a 400. A body that fails
validation is rejected before the key is recorded, so a corrected retry may reuse it.

Reads for assertions: ``GET /synced``, ``/contacts``, ``/deals`` (each ``?tenant=``).

The "source" side stands in for "records that changed since the last sync", so a demo
flow has something to sync from: ``GET /pending?tenant=&scope=contacts,deals`` lists the
tenant's staged records (constructor ``seed`` or ``POST /_control/stage``), already in
the sync wire shape; a successful sync of a record (same email or deal name) unstages it.
A sync that names only a ``scope`` (``["contacts", "deals"]``) and no records syncs the
tenant's staged records of those kinds: what a CRM connector does for "continue the sync".

Test controls (not part of any CRM's API): ``POST /_control/faults {"failNext": n,
"status": 503, "delaySeconds": x}`` fails the next n syncs before anything is applied, and
delays each applied sync (a client that gives up during the delay does not undo the
write: as with a real CRM, its retry is a replay); ``POST /_control/reset`` returns to
the constructor's state.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from sba_devstack.standin_serve import LoopbackServer, serve_until_signal

SCOPES: Final = ("contacts", "deals")


class _Invalid(ValueError):
    """A request the CRM rejects with a 400."""


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _contact(raw: Any) -> dict[str, Any]:
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("email"), str)
        or "@" not in raw["email"]
    ):
        raise _Invalid(f"a contact needs an email address: {raw!r}")
    contact: dict[str, Any] = {"email": raw["email"].strip()}
    for name in ("name", "company"):
        if raw.get(name) is not None:
            if not isinstance(raw[name], str):
                raise _Invalid(f"contact {name} must be a string")
            contact[name] = raw[name]
    return contact


def _deal(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _Invalid(f"a deal must be an object: {raw!r}")
    name, amount, stage = raw.get("name"), raw.get("amount"), raw.get("stage")
    if not isinstance(name, str) or not name.strip():
        raise _Invalid("a deal needs a name")
    if isinstance(amount, bool) or not isinstance(amount, int | float) or amount < 0:
        raise _Invalid(f"deal {name!r}: amount must be a number >= 0")
    if not isinstance(stage, str) or not stage.strip():
        raise _Invalid(f"deal {name!r}: stage must be a non-empty string")
    return {"name": name.strip(), "amount": amount, "stage": stage.strip()}


def _records(body: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    contacts, deals = body.get("contacts", []), body.get("deals", [])
    if not isinstance(contacts, list) or not isinstance(deals, list):
        raise _Invalid("contacts and deals must be arrays")
    return [_contact(c) for c in contacts], [_deal(d) for d in deals]


def _fingerprint(body: Any) -> str:
    # Canonical JSON, so key order and whitespace do not make a retry "a different body".
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


class CrmStandIn(LoopbackServer):
    """An in-process CRM on a loopback port; see the module docstring for the protocol."""

    name = "CRM stand-in"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str | None = None,
        seed: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__(host, port)
        self._api_key = api_key
        self._seed = {tenant: _records(records) for tenant, records in (seed or {}).items()}
        # One writer at a time: a duplicate arriving while the first is applied must see
        # the stored answer, not apply again.
        self._lock = asyncio.Lock()
        self._reset()

    def _reset(self) -> None:
        self._contacts: dict[tuple[str, str], dict[str, Any]] = {}
        self._deals: dict[tuple[str, str], dict[str, Any]] = {}
        self._syncs: list[dict[str, Any]] = []
        self._replays: list[dict[str, Any]] = []
        self._answers: dict[str, tuple[str, dict[str, Any]]] = {}  # key -> (fingerprint, body)
        self._staged: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
        for tenant, (contacts, deals) in self._seed.items():
            self._stage(tenant, contacts, deals)
        self._fail_next, self._fail_status, self._delay = 0, 503, 0.0

    @property
    def base_url(self) -> str:
        return self.origin

    @property
    def url(self) -> str:
        """The sync endpoint: what the API's SBA_CRM_URL points at."""
        return f"{self.base_url}/sync"

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/sync", self._sync)
        app.router.add_post("/api/sync", self._sync)
        app.router.add_get("/synced", self._synced)
        app.router.add_get("/contacts", self._list)
        app.router.add_get("/deals", self._list)
        app.router.add_get("/pending", self._pending)
        app.router.add_post("/_control/stage", self._control_stage)
        app.router.add_post("/_control/faults", self._control_faults)
        app.router.add_post("/_control/reset", self._control_reset)

    def _stage(
        self, tenant: str, contacts: list[dict[str, Any]], deals: list[dict[str, Any]]
    ) -> None:
        staged = self._staged.setdefault(tenant, {"contacts": {}, "deals": {}})
        staged["contacts"].update((c["email"].lower(), c) for c in contacts)
        staged["deals"].update((d["name"], d) for d in deals)

    def _authorized(self, request: web.Request) -> bool:
        if self._api_key is None:
            return True
        expected = f"Bearer {self._api_key}".encode()
        return secrets.compare_digest(request.headers.get("Authorization", "").encode(), expected)

    async def _sync(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(401, "unauthorized", "a valid Bearer token is required")
        if self._fail_next > 0:
            # An outage in front of the CRM: nothing is read, applied or remembered.
            self._fail_next -= 1
            return _error(self._fail_status, "injected_fault", "the CRM is unavailable")
        key = request.headers.get("Idempotency-Key", "").strip()
        if not key:
            return _error(400, "idempotency_key_missing", "an Idempotency-Key header is required")
        try:
            body, sync = self._parse(request, key, await request.read())
        except _Invalid as invalid:
            return _error(400, "invalid_request", str(invalid))
        fingerprint = _fingerprint(body)
        async with self._lock:
            stored = self._answers.get(key)
            if stored is not None:
                if stored[0] != fingerprint:
                    message = f"Idempotency-Key {key!r} was already used with a different body"
                    return _error(422, "idempotency_key_reused", message)
                self._replays.append(
                    {
                        "idempotencyKey": key,
                        "tenant": sync["tenant"],
                        "remoteId": stored[1]["remoteId"],
                        "receivedAt": time.time(),
                    }
                )
                return web.json_response(stored[1], headers={"Idempotent-Replayed": "true"})
            if self._delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), self._delay)
            answer = self._apply(sync, key)
            self._answers[key] = (fingerprint, answer)
        return web.json_response(answer)

    def _parse(self, request: web.Request, key: str, raw: bytes) -> tuple[Any, dict[str, Any]]:
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise _Invalid("the body is not JSON") from exc
        if not isinstance(body, dict):
            raise _Invalid("the body must be a JSON object")
        if body.get("mode") != "upsert":
            raise _Invalid("mode must be 'upsert'")
        if body.get("idempotencyKey") not in (None, key):
            raise _Invalid("idempotencyKey in the body differs from the Idempotency-Key header")
        sync: dict[str, Any] = {}
        for field, header in (
            ("tenant", "X-SBA-Tenant"),
            ("runId", "X-SBA-Run-Id"),
            ("stepId", "X-SBA-Step-Id"),
        ):
            value, sent = body.get(field), request.headers.get(header)
            if value is not None and not isinstance(value, str):
                raise _Invalid(f"{field} must be a string")
            if value is not None and sent is not None and value != sent:
                raise _Invalid(f"{field} in the body differs from the {header} header")
            sync[field] = value if value is not None else sent
        if not sync["tenant"]:
            raise _Invalid("tenant is required")
        sync["contacts"], sync["deals"] = _records(body)
        scope = body.get("scope")
        if scope is not None and (
            not isinstance(scope, list) or not scope or not set(scope) <= set(SCOPES)
        ):
            raise _Invalid(f"scope must be a non-empty list of {list(SCOPES)}")
        sync["scope"] = scope or []
        return body, sync

    def _apply(self, sync: dict[str, Any], key: str) -> dict[str, Any]:
        tenant, now = sync["tenant"], time.time()
        remote_id = f"sync-{len(self._syncs) + 1}"
        staged = self._staged.get(tenant, {"contacts": {}, "deals": {}})
        if not sync["contacts"] and not sync["deals"]:
            # A scope alone: sync what changed in the tenant's source since the last sync.
            if "contacts" in sync["scope"]:
                sync["contacts"] = list(staged["contacts"].values())
            if "deals" in sync["scope"]:
                sync["deals"] = list(staged["deals"].values())
        emails, deal_names = set(), set()
        for contact in sync["contacts"]:
            email = contact["email"].lower()
            previous = self._contacts.get((tenant, email), {})
            # Upsert merges: a field the sync leaves out keeps its stored value.
            self._contacts[(tenant, email)] = {
                **previous,
                **contact,
                "tenant": tenant,
                "updatedAt": now,
                "remoteId": remote_id,
            }
            staged["contacts"].pop(email, None)
            emails.add(email)
        for deal in sync["deals"]:
            self._deals[(tenant, deal["name"])] = {
                **deal,
                "tenant": tenant,
                "updatedAt": now,
                "remoteId": remote_id,
            }
            staged["deals"].pop(deal["name"], None)
            deal_names.add(deal["name"])
        synced = {"contacts": len(emails), "deals": len(deal_names)}
        self._syncs.append(
            {
                "remoteId": remote_id,
                "idempotencyKey": key,
                "tenant": tenant,
                "runId": sync["runId"],
                "stepId": sync["stepId"],
                **synced,
                "receivedAt": now,
            }
        )
        return {"remoteId": remote_id, "synced": synced}

    async def _synced(self, request: web.Request) -> web.Response:
        tenant = request.query.get("tenant")
        syncs = [s for s in self._syncs if tenant is None or s["tenant"] == tenant]
        replays = [r for r in self._replays if tenant is None or r["tenant"] == tenant]
        return web.json_response({"syncs": syncs, "applied": len(syncs), "replays": len(replays)})

    async def _list(self, request: web.Request) -> web.Response:
        kind = request.path.strip("/")
        store = self._contacts if kind == "contacts" else self._deals
        tenant = request.query.get("tenant")
        records = [r for (t, _), r in store.items() if tenant is None or t == tenant]
        return web.json_response({kind: records})

    async def _pending(self, request: web.Request) -> web.Response:
        tenant = request.query.get("tenant")
        if not tenant:
            return _error(400, "invalid_request", "the tenant query parameter is required")
        scope = [s.strip() for s in request.query.get("scope", ",".join(SCOPES)).split(",")]
        if unknown := set(scope) - set(SCOPES):
            return _error(400, "invalid_request", f"unknown scope {sorted(unknown)}")
        staged = self._staged.get(tenant, {"contacts": {}, "deals": {}})
        # Both keys always, so a caller can index without checking; out of scope is empty.
        return web.json_response(
            {k: list(staged[k].values()) if k in scope else [] for k in SCOPES}
        )

    async def _control_stage(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            tenant = body.get("tenant") if isinstance(body, dict) else None
            if not isinstance(tenant, str) or not tenant:
                raise _Invalid("tenant is required")
            self._stage(tenant, *_records(body))
        except (ValueError, TypeError) as exc:
            return _error(400, "invalid_request", str(exc))
        staged = self._staged[tenant]
        return web.json_response({k: list(staged[k].values()) for k in SCOPES})

    async def _control_faults(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            fail_next = int(body.get("failNext", 0))
            status = int(body.get("status", 503))
            delay = float(body.get("delaySeconds", self._delay))
            if fail_next < 0 or not 400 <= status <= 599 or delay < 0:
                raise ValueError("failNext >= 0, status 4xx/5xx, delaySeconds >= 0")
        except (ValueError, TypeError, AttributeError) as exc:
            return _error(400, "invalid_request", str(exc))
        self._fail_next, self._fail_status, self._delay = fail_next, status, delay
        return web.json_response({"failNext": fail_next, "status": status, "delaySeconds": delay})

    async def _control_reset(self, request: web.Request) -> web.Response:
        self._reset()
        return web.json_response({"reset": True})


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sba_devstack.crm_standin",
        description="A CRM stand-in speaking crm.sync's wire contract (dev and tests only).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--api-key", default=None, help="require this Bearer token on /sync")
    parser.add_argument(
        "--seed",
        type=Path,
        default=None,
        help='JSON file: {"<tenant>": {"contacts": [...], "deals": [...]}} to stage',
    )
    args = parser.parse_args(argv)
    seed = json.loads(args.seed.read_text()) if args.seed else None
    standin = CrmStandIn(args.host, args.port, api_key=args.api_key, seed=seed)
    asyncio.run(serve_until_signal(standin, lambda: f"CRM stand-in listening on {standin.url}"))


if __name__ == "__main__":
    main()
