"""Turn a pydantic model's JSON Schema into a Kubernetes structural OpenAPI v3 schema.

Kubernetes accepts only a subset of JSON Schema (no $ref, no anyOf with null,
every object typed), so the model's schema is inlined and rewritten here.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

_DROP = {"title", "$defs", "discriminator"}


def _resolve(ref: str, defs: dict[str, Any]) -> dict[str, Any]:
    name = ref.rsplit("/", 1)[-1]
    resolved: dict[str, Any] = defs[name]
    return resolved


def _convert(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        merged = {**_resolve(node["$ref"], defs), **{k: v for k, v in node.items() if k != "$ref"}}
        return _convert(merged, defs)
    if "allOf" in node and len(node["allOf"]) == 1:
        merged = {**node["allOf"][0], **{k: v for k, v in node.items() if k != "allOf"}}
        return _convert(merged, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(options) == 1:
            converted = _convert({**options[0], **rest}, defs)
            if rest.get("default", "unset") is None:
                converted.pop("default", None)
            return converted
        raise ValueError(f"cannot express anyOf with several non-null options: {node}")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "default" and value is None:
            continue
        if key == "properties":
            out["properties"] = {name: _convert(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out["items"] = _convert(value, defs)
        elif key == "additionalProperties":
            if value is False:
                continue  # structural schemas prune unknown fields anyway
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            else:
                out["additionalProperties"] = _convert(value, defs)
        elif key == "format" and value in ("date-time",):
            out["format"] = value
        elif key == "format":
            continue
        elif key == "const":
            out["enum"] = [value]
        else:
            out[key] = value
    if (
        out.get("type") == "object"
        and "properties" not in out
        and "additionalProperties" not in out
    ):
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's schema, by alias, in the form a CRD's openAPIV3Schema accepts."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    return _convert(raw, defs)
