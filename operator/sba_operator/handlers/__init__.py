"""Kopf handlers and the drivers that execute the pure reconcile's decisions."""

from sba_operator.handlers.registration import OperatorContext, build_registry, configure_kopf

__all__ = ["OperatorContext", "build_registry", "configure_kopf"]
