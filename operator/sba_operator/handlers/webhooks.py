"""The operator's validating admission webhook (Kopf serves it; off unless configured).

`kubectl apply` of an AgentRun whose explicit plan names a tool its namespace does not
have, or params that break a tool's contract, is refused with the reason; so is a Tool
or ClusterTool that cannot be used. The check is the API's own (`validate_plan`, over
the same catalog the reconcile uses). Failures of the webhook itself are ignored by the
API server (failurePolicy Ignore): creating runs never depends on the operator being
up, and the reconcile refuses the same runs with the same message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import kopf
from pydantic import ValidationError

from sba_core import group
from sba_core.models.run import AgentRunSpec
from sba_core.planning import PlanningError, explicit_steps
from sba_core.tools.catalog import ToolCatalog, UserKind, definition_of, validate_plan
from sba_operator.settings import AdmissionSettings


def run_refusal(spec: Mapping[str, Any], namespace: str, catalog: ToolCatalog) -> str | None:
    """Why an AgentRun with `spec` must not be created in `namespace`; None: admit it."""
    try:
        parsed = AgentRunSpec.model_validate(dict(spec))
    except ValidationError:
        return None  # the CRD's schema speaks for the spec's shape
    if not parsed.plan:
        return None  # planned by the operator, over the tools the namespace has
    try:
        validate_plan(catalog, namespace, explicit_steps(parsed.plan), parsed.options.max_steps)
    except PlanningError as exc:
        return f"spec.plan: {exc}"
    return None


def tool_refusal(kind: UserKind, body: Mapping[str, Any]) -> str | None:
    return definition_of(kind, body).problem


class _HasCatalog(Protocol):
    @property
    def catalog(self) -> ToolCatalog: ...


def configure_webhook_server(
    kopf_settings: kopf.OperatorSettings, admission: AdmissionSettings
) -> None:
    kopf_settings.admission.server = kopf.WebhookServer(
        addr=admission.addr,
        port=admission.port,
        host=admission.host,
        certfile=admission.certfile,
        pkeyfile=admission.pkeyfile,
        cafile=admission.cafile,
    )
    kopf_settings.admission.managed = admission.configuration


def register_webhooks(
    registry: kopf.OperatorRegistry, catalog_of: Callable[[kopf.Memo], _HasCatalog | None]
) -> None:
    @kopf.on.validate(
        group.GROUP,
        group.VERSION,
        group.AGENTRUN_PLURAL,
        id="agentrun-tools",
        operations=["CREATE"],
        ignore_failures=True,
        side_effects=False,
        registry=registry,
    )
    def validate_run(
        spec: Mapping[str, Any], namespace: str | None, memo: kopf.Memo, **_: Any
    ) -> None:
        found = catalog_of(memo)
        if found is None or not namespace:
            return  # still starting: the reconcile checks the run
        refusal = run_refusal(spec, namespace, found.catalog)
        if refusal:
            raise kopf.AdmissionError(refusal, code=422)

    for kind, plural in (
        ("ClusterTool", group.CLUSTERTOOL_PLURAL),
        ("Tool", group.TOOL_PLURAL),
    ):

        def make(kind: UserKind) -> Callable[..., None]:
            def validate_tool(body: kopf.Body, **_: Any) -> None:
                refusal = tool_refusal(kind, body)
                if refusal:
                    raise kopf.AdmissionError(refusal, code=422)

            return validate_tool

        kopf.on.validate(
            group.GROUP,
            group.VERSION,
            plural,
            id=f"{plural}-definition",
            operations=["CREATE", "UPDATE"],
            ignore_failures=True,
            side_effects=False,
            registry=registry,
        )(make(kind))  # type: ignore[arg-type]
