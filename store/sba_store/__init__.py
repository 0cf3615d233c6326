"""sba_store: the only package that talks SQL.

Callers create one pool with `create_pool(dsn)` and pass it to the repositories.
The API and the operator connect as the application role sba_app (`app_dsn`),
which row-level security confines to the tenant of each `tenant_transaction`;
migrations run as the owner.
"""

from sba_store.artifacts import ArtifactRepository
from sba_store.audit import AuditRepository
from sba_store.db import create_pool, tenant_transaction
from sba_store.events import EventRepository
from sba_store.knowledge import KnowledgeRepository
from sba_store.records import (
    ArtifactRecord,
    AuditRecord,
    KnowledgeDocumentRecord,
    KnowledgeHitRecord,
    NewEvent,
    RunEventRecord,
    RunRecord,
    TenantRecord,
    ToolCallRecord,
)
from sba_store.roles import APP_ROLE, app_dsn
from sba_store.runs import RunRepository
from sba_store.tenants import TenantRepository
from sba_store.tool_calls import ToolCallRepository

__all__ = [
    "APP_ROLE",
    "ArtifactRecord",
    "ArtifactRepository",
    "AuditRecord",
    "AuditRepository",
    "EventRepository",
    "KnowledgeDocumentRecord",
    "KnowledgeHitRecord",
    "KnowledgeRepository",
    "NewEvent",
    "RunEventRecord",
    "RunRecord",
    "RunRepository",
    "TenantRecord",
    "TenantRepository",
    "ToolCallRecord",
    "ToolCallRepository",
    "app_dsn",
    "create_pool",
    "tenant_transaction",
]
