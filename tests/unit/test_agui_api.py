"""The AG-UI routes in the OpenAPI document, and how a RunAgentInput is read."""

from __future__ import annotations

import pytest

from sba_api.errors import ApiError
from sba_api.openapi import build_openapi
from sba_api.routes import ROUTES
from sba_api.schemas_agui import AguiResume, AguiRunInput
from sba_api.services.agui import _approval_answer, _input_value, last_user_text
from sba_core.models.approval import Decision


def test_openapi_documents_both_agui_routes() -> None:
    doc = build_openapi(ROUTES, title="t", version="v")
    stream = doc["paths"]["/api/v1/runs/{run_id}/agui"]["get"]
    assert stream["x-permission"] == "runs:read"
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    assert {"bearerAuth": []} in stream["security"]
    assert {"streamToken": []} in stream["security"]
    assert "Last-Event-ID" in {p["name"] for p in stream["parameters"]}
    post = doc["paths"]["/api/v1/agui"]["post"]
    assert post["x-permission"] == "runs:create"
    assert "Idempotency-Key" in {p["name"] for p in post["parameters"]}
    assert "text/event-stream" in post["responses"]["200"]["content"]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert {"threadId", "runId", "messages", "forwardedProps", "resume"} <= set(
        schema["properties"]
    )
    assert schema["required"] == ["threadId"]


def test_the_prompt_is_the_last_user_message() -> None:
    body = AguiRunInput.model_validate(
        {
            "threadId": "t",
            "messages": [
                {"id": "1", "role": "user", "content": "old question"},
                {"id": "2", "role": "assistant", "content": "answer"},
                {
                    "id": "3",
                    "role": "user",
                    "content": [{"type": "text", "text": "new"}, {"type": "image"}],
                },
            ],
            "unknownKey": 1,  # AG-UI objects are open
        }
    )
    assert last_user_text(body) == "new"
    assert last_user_text(AguiRunInput(thread_id="t")) is None


@pytest.mark.parametrize(
    ("status", "payload", "decision", "reason"),
    [
        ("resolved", {"approved": True, "reason": "ok"}, Decision.APPROVED, "ok"),
        ("resolved", {"approved": False}, Decision.DENIED, None),
        ("resolved", True, Decision.APPROVED, None),
        ("resolved", {"decision": "denied", "reason": "no"}, Decision.DENIED, "no"),
        ("cancelled", None, Decision.DENIED, "cancelled by the AG-UI client"),
    ],
)
def test_approval_answers(
    status: str, payload: object, decision: Decision, reason: str | None
) -> None:
    entry = AguiResume.model_validate(
        {"interruptId": "r:approval:s:1", "status": status, "payload": payload}
    )
    answer = _approval_answer(entry)
    assert (answer.status, answer.reason) == (decision, reason)


def test_unusable_resume_payloads_are_400() -> None:
    entry = AguiResume.model_validate({"interruptId": "x", "status": "resolved", "payload": 3})
    with pytest.raises(ApiError) as approval:
        _approval_answer(entry)
    assert approval.value.status == 400
    with pytest.raises(ApiError) as given:
        _input_value(entry)
    assert given.value.status == 400
    text = AguiResume.model_validate(
        {"interruptId": "x", "status": "resolved", "payload": {"input": "EU"}}
    )
    assert _input_value(text) == "EU"
