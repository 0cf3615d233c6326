from __future__ import annotations

import pytest

from sba_core import sse


def test_frame_has_id_event_data_and_blank_line() -> None:
    assert sse.frame('{"a":1}', event="step_started", event_id="7") == (
        b'id: 7\nevent: step_started\ndata: {"a":1}\n\n'
    )


def test_multiline_data_is_split_into_data_lines() -> None:
    assert sse.frame("one\ntwo\r\nthree") == b"data: one\ndata: two\ndata: three\n\n"


def test_id_with_newline_is_refused() -> None:
    with pytest.raises(ValueError, match="id"):
        sse.frame("x", event_id="1\n2")


def test_retry_and_comment() -> None:
    assert sse.retry(1500) == b"retry: 1500\n\n"
    assert sse.comment("hb") == b": hb\n\n"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, 0), ("", 0), ("12", 12), ("abc:12", 12), ("garbage", 0), ("-3", 0), (" 5 ", 5)],
)
def test_parse_last_event_id(value: str | None, expected: int) -> None:
    assert sse.parse_last_event_id(value) == expected
