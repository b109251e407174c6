"""CAP 1.2 parsing and mapping, on the shipped sample messages (no database, no HTTP)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from loaxa_protocol import AlertSeverity
from server.alerts.cap import CapError, Reference, fold, match_area_name, parse_cap

SAMPLES = Path(__file__).parents[1] / "data" / "cap"
NOW = datetime(2026, 9, 13, 0, 0, tzinfo=UTC)
NAMES = {
    "04": "Cao Bằng",
    "01273": "Phường Thục Phán",
    "01279": "Phường Nùng Trí Cao",
    "01288": "Phường Tân Giang",
    "01304": "Xã Quảng Lâm",
}


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def test_an_alert_uses_the_vietnamese_info_and_matches_names_without_diacritics() -> None:
    message = parse_cap(sample("typhoon-alert.xml"), NAMES, NOW)
    assert (message.msg_type, message.drill) == ("Alert", False)
    assert message.identifier == "KTTV-CB-2026-0913-01"
    assert message.sender == "kttv-caobang@nchmf.gov.vn"
    assert message.title == "Bão số 3 đang tiến vào Cao Bằng"
    assert message.severity is AlertSeverity.EXTREME
    assert message.text == (
        "Bão số 3 đang tiến vào Cao Bằng. Gió mạnh cấp 10, mưa rất to. Bà con không ra khỏi nhà."
    )
    assert message.area_codes == ["01273", "01279"]
    assert message.expires_at == NOW + timedelta(hours=2)
    assert message.audio is None


def test_an_exercise_with_audio_is_a_drill_carrying_that_audio() -> None:
    message = parse_cap(sample("dam-drill-audio.xml"), NAMES, NOW)
    assert message.drill is True and message.severity is AlertSeverity.MODERATE
    assert message.audio is not None and message.audio.startswith(b"OggS")
    assert message.audio_where == "info[1]/resource[1]/derefUri"
    assert message.area_codes == ["01288"]  # the geocode decides


def test_update_and_cancel_name_what_they_replace() -> None:
    sender = "kttv-caobang@nchmf.gov.vn"
    update = parse_cap(sample("typhoon-update.xml"), NAMES, NOW)
    assert update.sent == datetime(2026, 9, 13, 0, 0, tzinfo=UTC)
    assert update.referenced == [
        Reference(sender, "KTTV-CB-2026-0913-01", datetime(2026, 9, 12, 22, 0, tzinfo=UTC))
    ]
    assert update.area_codes == ["01273"]
    cancel = parse_cap(sample("typhoon-cancel.xml"), NAMES, NOW)
    assert cancel.msg_type == "Cancel" and cancel.area_codes is None
    assert cancel.referenced == [
        Reference(sender, "KTTV-CB-2026-0913-02", datetime(2026, 9, 13, 0, 0, tzinfo=UTC))
    ]


def test_a_reference_without_a_proper_sent_is_refused_naming_it() -> None:
    raw = replace(sample("typhoon-cancel.xml"), ",2026-09-13T07:00:00+07:00<", ",yesterday<")
    with pytest.raises(CapError, match=r"references: .*'yesterday' is not a date-time"):
        parse_cap(raw, NAMES, NOW)


def test_the_instruction_is_read_after_the_headline_and_the_description() -> None:
    message = parse_cap(sample("flood-instruction.xml"), NAMES, NOW)
    assert message.text == (
        "Cảnh báo lũ quét. Mưa lớn trên thượng nguồn sông Bằng. "
        "Bà con ven suối di chuyển lên chỗ cao ngay."
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("malformed.xml", "malformed XML: "),
        ("schema-violation.xml", "CAP 1.2 schema violation: line 14: Element 'severity'"),
        ("no-area-match.xml", "info[1]/area[1]/areaDesc: 'Phường Hoàn Kiếm' matches no area"),
    ],
)
def test_bad_messages_name_the_element(name: str, expected: str) -> None:
    with pytest.raises(CapError) as caught:
        parse_cap(sample(name), NAMES, NOW)
    assert expected in str(caught.value)


def replace(text: bytes, old: str, new: str) -> bytes:
    assert old.encode() in text
    return text.replace(old.encode(), new.encode())


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("<status>Actual", "<status>Test", "status: 'Test' messages are not broadcast"),
        ("<msgType>Alert", "<msgType>Ack", "msgType: 'Ack' is not an alert"),
        ("urn:oasis:names:tc:emergency:cap:1.2", "urn:x", "not a CAP 1.2 message"),
        (
            "<areaDesc>Phường Thục Phán; phuong nung tri cao</areaDesc>",
            "<areaDesc>x</areaDesc><geocode><valueName>VN-ADMIN</valueName>"
            "<value>99999</value></geocode>",
            "info[2]/area[1]/geocode: VN-ADMIN '99999' is not an area code",
        ),
        (
            "<certainty>Observed</certainty>\n    <headline>Bão số 3",
            "<certainty>Observed</certainty>\n    <expires>2026-09-12T00:00:00+07:00</expires>"
            "<headline>Bão số 3",
            "info[2]/expires: 2026-09-12T00:00:00+07:00 is already past",
        ),
        ("<sent>2026-09-13T05:00:00+07:00", "<sent>2026-09-13 05:00", "Element 'sent'"),
    ],
)
def test_every_refusal_says_where(old: str, new: str, expected: str) -> None:
    with pytest.raises(CapError) as caught:
        parse_cap(replace(sample("typhoon-alert.xml"), old, new), NAMES, NOW)
    assert expected in str(caught.value)


def test_an_update_without_references_is_refused() -> None:
    raw = replace(sample("typhoon-update.xml"), "<references>", "<note>")
    raw = replace(raw, "</references>", "</note>")
    with pytest.raises(CapError, match="references: a Update must name"):
        parse_cap(raw, NAMES, NOW)


def test_oversized_audio_is_refused_before_decoding() -> None:
    import base64

    huge = base64.b64encode(b"\0" * (5 * 1024 * 1024)).decode()
    raw = sample("dam-drill-audio.xml")
    start = raw.index(b"<derefUri>") + len(b"<derefUri>")
    end = raw.index(b"</derefUri>")
    with pytest.raises(CapError) as caught:
        parse_cap(raw[:start] + huge.encode() + raw[end:], NAMES, NOW)
    assert "info[1]/resource[1]/derefUri: audio is 5120 KiB, inline alerts carry at most" in str(
        caught.value
    )


def test_entities_are_not_expanded() -> None:
    raw = b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>' + sample(
        "typhoon-alert.xml"
    ).split(b"?>", 1)[1].replace(b"Typhoon</event>", b"&x;</event>")
    with pytest.raises(CapError, match="a DOCTYPE is not allowed"):
        parse_cap(raw, NAMES, NOW)


def test_names_match_with_or_without_diacritics_and_unit_prefix() -> None:
    assert fold("  Phường  Nùng Trí Cao ") == "phuong nung tri cao"
    assert fold("Đông Khê") == "dong khe"
    assert match_area_name("nung tri cao", NAMES) == ["01279"]
    assert match_area_name("Xã Quảng Lâm", NAMES) == ["01304"]
    assert match_area_name("Cao Bằng", NAMES) == ["04"]  # the exact name wins over "Trí Cao"
    assert match_area_name("Hà Nội", NAMES) == []
