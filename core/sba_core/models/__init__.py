"""Pydantic models: the single source for CRD schemas, API bodies and the OpenAPI document."""
