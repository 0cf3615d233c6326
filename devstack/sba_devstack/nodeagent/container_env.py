"""A container's environment and command line, resolved as the kubelet does.

`$(VAR)` references in env values, command and args expand against variables defined
earlier; `$$(VAR)` is an escape for a literal `$(VAR)`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from typing import Any

Json = dict[str, Any]
# (namespace, kind "secret"|"configmap", name) -> the object's data, or None if absent.
SourceLookup = Callable[[str, str, str], Mapping[str, str] | None]

_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


class EnvError(Exception):
    """The environment cannot be built (CreateContainerConfigError)."""


def expand(text: str, env: Mapping[str, str]) -> str:
    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _REF.sub(repl, text)


def field_ref(pod: Mapping[str, Any], path: str) -> str:
    meta = pod.get("metadata", {})
    spec = pod.get("spec", {})
    status = pod.get("status", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": status.get("podIP") or "127.0.0.1",
        "status.podIPs": status.get("podIP") or "127.0.0.1",
        "status.hostIP": "127.0.0.1",
        "status.hostIPs": "127.0.0.1",
    }
    if path in simple:
        return str(simple[path])
    for prefix, key in (("metadata.labels", "labels"), ("metadata.annotations", "annotations")):
        if path == prefix:
            items = sorted((meta.get(key) or {}).items())
            return "\n".join(f'{k}="{v}"' for k, v in items)
        if path.startswith(prefix + "['") and path.endswith("']"):
            return str((meta.get(key) or {}).get(path[len(prefix) + 2 : -2], ""))
    raise EnvError(f"unsupported fieldRef {path!r}")


def _source(
    lookup: SourceLookup, namespace: str, kind: str, ref: Mapping[str, Any]
) -> Mapping[str, str] | None:
    data = lookup(namespace, kind, str(ref.get("name", "")))
    if data is None and not ref.get("optional"):
        raise EnvError(f'{kind} "{ref.get("name")}" not found')
    return data


def build_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    lookup: SourceLookup,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """`base` (PATH, HOME, ...) overlaid with envFrom then env, in spec order."""
    namespace = str(pod.get("metadata", {}).get("namespace", ""))
    env: dict[str, str] = dict(base or {})
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix", ""))
        for kind, key in (("configmap", "configMapRef"), ("secret", "secretRef")):
            if key in source:
                found = _source(lookup, namespace, kind, source[key]) or {}
                env.update({prefix + k: v for k, v in found.items()})
    for var in container.get("env") or []:
        name = str(var["name"])
        if "valueFrom" not in var:
            env[name] = expand(str(var.get("value", "")), env)
            continue
        value_from = var["valueFrom"]
        if "fieldRef" in value_from:
            env[name] = field_ref(pod, str(value_from["fieldRef"]["fieldPath"]))
        elif "secretKeyRef" in value_from or "configMapKeyRef" in value_from:
            kind, key = (
                ("secret", "secretKeyRef")
                if "secretKeyRef" in value_from
                else ("configmap", "configMapKeyRef")
            )
            ref = value_from[key]
            data = _source(lookup, namespace, kind, ref)
            item = str(ref.get("key", ""))
            if data is None or item not in data:
                if ref.get("optional"):
                    continue
                raise EnvError(f"couldn't find key {item} in {kind} {namespace}/{ref.get('name')}")
            env[name] = data[item]
        elif "resourceFieldRef" in value_from:
            resource = str(value_from["resourceFieldRef"].get("resource", ""))
            group, _, kind = resource.partition(".")
            limits = (container.get("resources") or {}).get(group) or {}
            env[name] = str(limits.get(kind, "0"))
        else:
            raise EnvError(f"unsupported valueFrom for {name}")
    return env


def decode_secret(data: Mapping[str, str]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode("utf-8", errors="replace") for k, v in data.items()}
