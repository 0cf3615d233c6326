"""Pure builders for the objects a tool step runs in: its Job and its step-token Secret.

Names are deterministic (`<run>-<step>-a<attempt>`, shortened with a hash to
stay a valid ≤ 63-character DNS label) so a repeated reconcile finds — and
adopts — what an earlier one created instead of creating a duplicate.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sba_core import group
from sba_core.tools.registry import ToolSpec
from sba_operator.settings import ToolSettings

MAX_NAME: Final = 63
CONTAINER_NAME: Final = "tool"
TOKEN_KEY: Final = "token"
COMPONENT_TOOL_STEP: Final = "tool-step"
NONROOT_ID: Final = 65532
EXIT_PERMANENT: Final = 2
"""The tool runtime exits 2 on a permanent error (bad params/contract): no pod retry."""
ENTRYPOINT_CONTAINER: Final = "sba-entrypoint"
"""The init container that copies `sba-step` into a user tool's pod."""
ENTRYPOINT_VOLUME: Final = "sba-bin"
ENTRYPOINT_DIR: Final = "/sba/bin"
ENTRYPOINT: Final = f"{ENTRYPOINT_DIR}/sba-step"
ENTRYPOINT_LIMITS: Final = {"cpu": "100m", "memory": "32Mi", "ephemeral-storage": "32Mi"}
TRACEPARENT_ENV: Final = "TRACEPARENT"
"""W3C trace context of the operator span that created the Job; sba-tool sends it on."""

_INVALID = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True)
class RunRef:
    """The parts of an AgentRun that child objects point back to."""

    uid: str
    name: str
    namespace: str
    tenant: str

    def owner_reference(self) -> dict[str, Any]:
        return {
            "apiVersion": group.API_VERSION,
            "kind": group.AGENTRUN_KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def _dns_label(text: str) -> str:
    label = _INVALID.sub("-", text.lower()).strip("-")
    return re.sub(r"-{2,}", "-", label) or "x"


def shorten(name: str, limit: int = MAX_NAME) -> str:
    """`name` as a DNS label of at most `limit` chars; a long one keeps a hash of the whole."""
    label = _dns_label(name)
    if len(label) <= limit and label == name:
        return label
    # Cut (or cleaned up): keep a hash of the original so distinct names stay distinct.
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    head = label[: limit - len(digest) - 1].rstrip("-")
    return f"{head}-{digest}" if head else digest


def job_name(run_name: str, step_id: str, attempt: int) -> str:
    """The Job of one attempt of one step: `<run>-<step>-a<n>`, ≤ 63 chars, deterministic."""
    return shorten(f"{run_name}-{step_id}-a{attempt}")


def token_secret_name(job: str) -> str:
    return f"{job}-token"


def label_value(text: str) -> str:
    """A valid label value (≤ 63 chars) for `text`, deterministic."""
    return shorten(text)


def step_labels(run: RunRef, step_id: str, attempt: int) -> dict[str, str]:
    return {
        group.LABEL_RUN_UID: run.uid,
        group.LABEL_RUN_NAME: label_value(run.name),
        group.LABEL_STEP: step_id,
        group.LABEL_ATTEMPT: str(attempt),
        group.LABEL_TENANT: run.tenant,
        group.LABEL_COMPONENT: COMPONENT_TOOL_STEP,
        group.LABEL_MANAGED_BY: group.MANAGED_BY,
    }


def labels_match(labels: Mapping[str, str], run: RunRef, step_id: str, attempt: int) -> bool:
    """Whether an existing object carrying `labels` is ours for this attempt (safe to adopt)."""
    return (
        labels.get(group.LABEL_RUN_UID) == run.uid
        and labels.get(group.LABEL_STEP) == step_id
        and labels.get(group.LABEL_ATTEMPT) == str(attempt)
    )


def _resources(spec: ToolSpec, tools: ToolSettings) -> dict[str, dict[str, str]]:
    limits = dict(spec.limits)
    wanted = spec.container.requests if spec.container is not None else {}
    requests = {
        key: wanted.get(key, tools.job.requests.get(key, value)) for key, value in limits.items()
    }
    for key, value in tools.job.requests.items():
        requests.setdefault(key, value)
        limits.setdefault(key, value)
    return {"requests": requests, "limits": limits}


_RESTRICTED: Final = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "privileged": False,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _entrypoint_init_container(tools: ToolSettings) -> dict[str, Any]:
    """Copies the static `sba-step` from the tool runtime image into the shared volume
    (as Argo's executor does): the user's image needs no SDK of ours, any language works."""
    return {
        "name": ENTRYPOINT_CONTAINER,
        "image": tools.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sba-step", "install", ENTRYPOINT],
        "resources": {"requests": dict(ENTRYPOINT_LIMITS), "limits": dict(ENTRYPOINT_LIMITS)},
        "securityContext": copy.deepcopy(_RESTRICTED),
        "volumeMounts": [{"name": ENTRYPOINT_VOLUME, "mountPath": ENTRYPOINT_DIR}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def build_step_secret(
    run: RunRef, step_id: str, attempt: int, name: str, token: str
) -> dict[str, Any]:
    """The Secret carrying one attempt's step token, owned by the AgentRun."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": run.namespace,
            "labels": step_labels(run, step_id, attempt),
            "ownerReferences": [run.owner_reference()],
        },
        "type": "Opaque",
        "stringData": {TOKEN_KEY: token},
    }


def build_job(
    *,
    run: RunRef,
    step_id: str,
    attempt: int,
    spec: ToolSpec,
    tools: ToolSettings,
    active_deadline_seconds: int | None = None,
    traceparent: str | None = None,
) -> dict[str, Any]:
    """The sandboxed Job for one attempt of one step (Pod Security "restricted" compliant).

    `active_deadline_seconds` is the step's deadline (plan override); the default
    comes from the operator's settings. `traceparent`: see `with_traceparent`.
    """
    name = job_name(run.name, step_id, attempt)
    labels = step_labels(run, step_id, attempt)
    otel_attributes = ",".join(
        [
            f"sba.run_id={run.uid}",
            f"sba.step_id={step_id}",
            f"sba.attempt={attempt}",
            f"sba.tool={spec.name}",
            f"sba.tenant={run.tenant}",
            f"k8s.namespace.name={run.namespace}",
            f"k8s.job.name={name}",
        ]
    )
    env: list[dict[str, Any]] = [
        {"name": "SBA_GATEWAY_URL", "value": tools.gateway_url},
        {
            "name": "SBA_STEP_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": token_secret_name(name), "key": TOKEN_KEY}},
        },
        {"name": "SBA_RUN_ID", "value": run.uid},
        {"name": "SBA_STEP_ID", "value": step_id},
        {"name": "SBA_ATTEMPT", "value": str(attempt)},
        {"name": "SBA_TOOL", "value": str(spec.name)},
        {"name": "SBA_TENANT", "value": run.tenant},
        {"name": "OTEL_SERVICE_NAME", "value": "sba-tool"},
        {"name": "OTEL_RESOURCE_ATTRIBUTES", "value": otel_attributes},
        {"name": "HOME", "value": "/tmp"},
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
    ]
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": tools.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sba-tool"],
        "env": env,
        "resources": _resources(spec, tools),
        "securityContext": copy.deepcopy(_RESTRICTED),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {"sizeLimit": tools.job.tmp_size_limit}}
    ]
    pod_extra: dict[str, Any] = {}
    user = spec.container
    if user is not None:
        # The user's image and program, started by the platform's entrypoint; the user's
        # env comes first so the platform's own variables are the ones that count.
        container["image"] = user.image
        container["command"] = [ENTRYPOINT, "--", *user.command]
        container["args"] = list(user.args)
        container["env"] = [*(copy.deepcopy(dict(e)) for e in user.env), *env]
        container["volumeMounts"].append(
            {"name": ENTRYPOINT_VOLUME, "mountPath": ENTRYPOINT_DIR, "readOnly": True}
        )
        volumes.append({"name": ENTRYPOINT_VOLUME, "emptyDir": {"sizeLimit": "32Mi"}})
        pod_extra["initContainers"] = [_entrypoint_init_container(tools)]
        if user.runtime_class_name:
            pod_extra["runtimeClassName"] = user.runtime_class_name
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": run.namespace,
            "labels": labels,
            "ownerReferences": [run.owner_reference()],
        },
        "spec": {
            "completions": 1,
            "parallelism": 1,
            "backoffLimit": tools.job.backoff_limit,
            "activeDeadlineSeconds": active_deadline_seconds or tools.job.active_deadline_seconds,
            "ttlSecondsAfterFinished": tools.job.ttl_seconds_after_finished,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": CONTAINER_NAME,
                            "operator": "In",
                            "values": [EXIT_PERMANENT],
                        },
                    },
                    {
                        "action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    },
                ]
            },
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": NONROOT_ID,
                        "runAsGroup": NONROOT_ID,
                        "fsGroup": NONROOT_ID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    **pod_extra,
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }
    return with_traceparent(job, traceparent)


def with_traceparent(job: Mapping[str, Any], traceparent: str | None) -> dict[str, Any]:
    """A copy of `job` whose tool container has `TRACEPARENT` set (replaced if present).

    Kept out of the Job's identity: an adopted Job keeps whatever trace it was created in.
    """
    result = copy.deepcopy(dict(job))
    if not traceparent:
        return result
    for container in result["spec"]["template"]["spec"]["containers"]:
        if container.get("name") != CONTAINER_NAME:
            continue
        env = [e for e in container.get("env", []) if e.get("name") != TRACEPARENT_ENV]
        env.append({"name": TRACEPARENT_ENV, "value": traceparent})
        container["env"] = env
    return result
