"""crm.sync: params and result."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from sba_core.models.base import WireModel

MAX_CRM_RECORDS = 500


class CrmContact(WireModel):
    email: Annotated[
        str,
        StringConstraints(
            strip_whitespace=True, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
        ),
    ]
    name: Annotated[str, StringConstraints(max_length=200)] | None = None
    company: Annotated[str, StringConstraints(max_length=200)] | None = None


class CrmDeal(WireModel):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    amount: float = Field(ge=0, allow_inf_nan=False)
    stage: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80)]


class CrmSyncMode(StrEnum):
    UPSERT = "upsert"


class CrmScope(StrEnum):
    CONTACTS = "contacts"
    DEALS = "deals"


class CrmSyncParams(WireModel):
    contacts: list[CrmContact] = Field(default_factory=list, max_length=MAX_CRM_RECORDS)
    deals: list[CrmDeal] = Field(default_factory=list, max_length=MAX_CRM_RECORDS)
    scope: Annotated[list[CrmScope], Field(min_length=1, max_length=2)] | None = Field(
        default=None,
        description="Record kinds to sync. Without explicit contacts or deals, the CRM"
        " connector syncs the tenant's records of these kinds changed since the last sync.",
    )
    mode: CrmSyncMode = CrmSyncMode.UPSERT

    @model_validator(mode="after")
    def _something_to_sync(self) -> CrmSyncParams:
        if not self.contacts and not self.deals and not self.scope:
            raise ValueError("give at least one contact or deal, or a scope")
        return self


class CrmSyncCounts(WireModel):
    contacts: int = Field(ge=0)
    deals: int = Field(ge=0)


class CrmSyncResult(WireModel):
    synced: CrmSyncCounts
    remote_id: Annotated[str, StringConstraints(max_length=200)] | None = None
