"""Kubernetes client wrappers: the only module that talks to the API server directly."""

from sba_operator.kube.client import (
    ApiError,
    Conflict,
    Kube,
    KubeError,
    KubeUnavailable,
    NotFound,
    new_api_client,
)

__all__ = [
    "ApiError",
    "Conflict",
    "Kube",
    "KubeError",
    "KubeUnavailable",
    "NotFound",
    "new_api_client",
]
