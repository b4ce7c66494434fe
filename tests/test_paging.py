"""Pages and page tokens (pure logic): signed tokens bound to their listing,
pages cut to a byte budget, and the largest possible items far below it, so
no listing answer can pass gRPC's 4 MiB message limit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from edgesense.common.errors import InvalidArgument
from edgesense.common.paging import MAX_SEQ, PAGE_BYTES, PageTokens, fit_page, page_size
from edgesense.common.textcheck import check_message_text, printable
from edgesense.delivery.service import MAX_ATTEMPTS_LISTED, delivery_record
from edgesense.registry.service import webhook_message
from edgesense.registry.store import StoredWebhook
from edgesense.registry.validation import (
    MAX_DESCRIPTION_CHARS,
    MAX_DEVICE_IDS,
    MAX_HEADER_NAME_CHARS,
    MAX_HEADERS,
)
from edgesense.v1 import registry_pb2

GRPC_LIMIT = 4 * 1024 * 1024
WIDE = "\U0001d54f"  # 4 bytes in UTF-8: the most bytes a character can cost
TOKENS = PageTokens("internal-token")
SCOPE = ("project-a", "wh_1", "")


def test_a_token_reads_back_in_its_own_scope_only() -> None:
    token = TOKENS.issue(SCOPE, "42")
    assert TOKENS.read_seq(token, SCOPE) == 42
    assert TOKENS.read("", SCOPE) is None
    for other in [
        ("project-b", "wh_1", ""),
        ("project-a", "wh_2", ""),
        ("project-a", "wh_1", "held"),
    ]:
        with pytest.raises(InvalidArgument) as caught:
            TOKENS.read(token, other)
        assert caught.value.field == "pageToken"
    with pytest.raises(InvalidArgument):
        PageTokens("another-key").read(token, SCOPE)


@pytest.mark.parametrize(
    "position", [str(MAX_SEQ + 1), "99999999999999999999999", "0", "-1", "1e3", "٣", ""]
)
def test_a_position_out_of_range_is_refused_even_when_signed(position: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        TOKENS.read_seq(TOKENS.issue(SCOPE, position), SCOPE)
    assert caught.value.field == "pageToken"


def test_an_altered_token_is_refused() -> None:
    token = TOKENS.issue(SCOPE, "42")
    encoded, _, mac = token.partition(".")
    forged = TOKENS.issue(("x",), "41").partition(".")[0] + "." + mac
    for bad in [forged, encoded, token + "A", token[:-2]]:
        with pytest.raises(InvalidArgument):
            TOKENS.read(bad, SCOPE)


def test_page_size() -> None:
    assert page_size(0, 50, 100) == 50
    assert page_size(7, 50, 100) == 7
    assert page_size(1000, 50, 100) == 100
    with pytest.raises(InvalidArgument, match="pageSize"):
        page_size(-1, 50, 100)


def test_a_page_ends_before_it_passes_the_budget() -> None:
    rows = [f"{i:02d}" + "x" * 98 for i in range(10)]

    def message(row: str) -> registry_pb2.Webhook:
        return registry_pb2.Webhook(webhook_id=row)

    page, more = fit_page(rows, message, page_size=10, budget=350)
    assert [m.webhook_id[:2] for m in page] == ["00", "01", "02"]
    assert more
    assert fit_page(rows, message, page_size=10)[1] is False
    assert len(fit_page(rows, message, page_size=4)[0]) == 4
    assert fit_page(rows, message, page_size=4)[1] is True
    # One item is always given, or the listing could never move on.
    assert len(fit_page(rows, message, page_size=10, budget=1)[0]) == 1


def test_the_largest_possible_webhook_is_far_below_a_page() -> None:
    now = datetime.now(UTC)
    hook = StoredWebhook(
        webhook_id="wh_" + "a" * 37,
        project_id="p" * 128,
        url="https://example.com/" + WIDE * 2028,
        events=("device.data", "device.alert", "device.status", "config.update"),
        description=WIDE * MAX_DESCRIPTION_CHARS,
        device_ids=tuple(f"{i:04d}".ljust(128, "x") for i in range(MAX_DEVICE_IDS)),
        status="disabled",
        created_at=now,
        disabled_at=now,
        disabled_reason=WIDE * 1000,
        secret_ciphertext="",
        updated_at=now,
        secret_rotation_ends_at=now + timedelta(days=7),
    )
    headers = {
        f"X-Custom-{i:02d}".ljust(MAX_HEADER_NAME_CHARS, "x"): "" for i in range(MAX_HEADERS)
    }
    size = webhook_message(hook, headers, now).ByteSize()
    assert size < PAGE_BYTES / 4
    assert PAGE_BYTES + size < GRPC_LIMIT / 2


def test_the_largest_possible_delivery_record_is_far_below_a_page() -> None:
    row = SimpleNamespace(
        delivery_id="dlv_x",
        webhook_id="wh_x",
        event_id="evt_x",
        event_name="device.data",
        device_id="d" * 128,
        status="failed",
        created_at=1.0,
        status_reason=WIDE * 5000,
    )
    # Redelivering adds attempts without end: 1,000 of them, each with the
    # largest response excerpt and an overlong error.
    logs = [
        SimpleNamespace(
            attempt=n,
            started_at=1.0,
            duration_ms=3000,
            status_code=500,
            error=WIDE * 5000,
            response_body=WIDE * 1024,
        )
        for n in range(1, 1001)
    ]
    record = delivery_record(row, logs)
    assert [a.attempt for a in record.attempts] == list(range(951, 1001))
    assert len(record.attempts) == MAX_ATTEMPTS_LISTED
    assert record.ByteSize() < PAGE_BYTES / 2


def test_control_characters_are_named_by_their_field_path() -> None:
    request = registry_pb2.RegisterWebhookRequest(
        url="https://example.com/", device_ids=["a", "b\x1bc"], description="x\ny"
    )
    with pytest.raises(InvalidArgument) as caught:
        check_message_text(request)
    assert caught.value.field == "deviceIds[1]"
    assert "U+001B at position 1" in caught.value.problem
    nested = registry_pb2.WebhookTarget(webhook=registry_pb2.Webhook(url="https://\x00"))
    with pytest.raises(InvalidArgument) as caught:
        check_message_text(nested)
    assert caught.value.field == "webhook.url"
    with pytest.raises(InvalidArgument, match="description"):
        check_message_text(registry_pb2.RegisterWebhookRequest(description="a\x00b"))
    check_message_text(registry_pb2.RegisterWebhookRequest(description="tab\there\r\n"))
    with pytest.raises(InvalidArgument, match="url"):
        check_message_text(registry_pb2.RegisterWebhookRequest(url="https://a/\u0085"))


def test_printable_replaces_control_characters() -> None:
    assert printable("HTTP 500\x00\n\tbody") == "HTTP 500   body"
    assert printable("fine") == "fine"
