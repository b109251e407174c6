"""The server's refusals, alarm details and station replies in the reader's language.

One case per entry of ``server.web.refusals.PATTERNS`` and ``STATION_PATTERNS`` (the
only place the pages read English text), one per structured ``code`` raised by the
domain packages, and the real paths: a clash, text too long to read, a stream address
that is a web page, in Vietnamese and in English, under the field they concern.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi import HTTPException

from server.alerts.service import AlertError
from server.audio.gate import MediaBusy
from server.i18n import language
from server.programmes.recurrence import RecurrenceError
from server.programmes.service import ProgrammeError
from server.tts.errors import TtsEngineMissing, TtsTextError
from server.web.refusals import CODES, PATTERNS, STATION_PATTERNS, explain, station_words

# (English refusal, field, Vietnamese) — in the order of PATTERNS, one each.
REFUSALS = [
    (
        "permission denied: programme.approve — admin submitted this programme; a different "
        "approver must approve it",
        "form",
        "admin đã gửi duyệt chương trình này, nên phải do một người phê duyệt khác duyệt.",
    ),
    (
        "permission denied: alert.send in area 01273 (your roles: viewer@01273)",
        "form",
        "Vai trò của bạn không cho phép phát cảnh báo khẩn cấp ở địa bàn 01273.",
    ),
    (
        "permission denied: programme.edit — 01273; targets outside your area: area 01279, "
        "station st-9 (area 01279)",
        "targets",
        "Những nơi phát này nằm ngoài địa bàn của bạn: địa bàn 01279, trạm st-9 (địa bàn 01279).",
    ),
    (
        "permission denied: broadcast.create_priority — x; a priority programme speaks for the "
        "province: commune operators may use normal or background only",
        "priority",
        "Chương trình mức “Ưu tiên” là tiếng nói của tỉnh: cấp xã chỉ được dùng mức “Thông "
        "thường” hoặc “Tiếp sóng / nền”.",
    ),
    (
        "targets.stations: unknown station(s) 'st-x'",
        "targets",
        "Không có các trạm loa này: 'st-x'.",
    ),
    ("targets.groups: unknown group(s) 'cho'", "targets", "Không có các nhóm trạm này: 'cho'."),
    ("area_codes: unknown area(s) '99999'", "areas", "Không có các địa bàn này: '99999'."),
    (
        "targets: no registered station is reached (area(s) '01279' have none)",
        "targets",
        "Ở đó chưa có trạm loa nào được đăng ký, nên không ai nghe được.",
    ),
    (
        "items[2]: audio_id 7 does not exist; upload it first",
        "items.2",
        "Tệp âm thanh số 7 không còn; hãy chọn tệp khác.",
    ),
    (
        "items[1]: stream http://10.0.0.5/vov1 answered HTTP 404: not an audio stream",
        "items.1",
        "Địa chỉ kênh http://10.0.0.5/vov1 trả lời lỗi 404: đây không phải kênh âm thanh.",
    ),
    (
        "items[1]: stream http://10.0.0.5/vov1 is not audio (Content-Type 'text/html', and its "
        "first bytes are no known audio format)",
        "items.1",
        "Địa chỉ http://10.0.0.5/vov1 không phát ra âm thanh (có thể là một trang web). Hãy "
        "kiểm tra lại địa chỉ.",
    ),
    (
        "items[1]: stream http://10.0.0.5/vov1 could not be reached from the server (timed out)",
        "items.1",
        "Lúc này máy chủ không bắt được kênh http://10.0.0.5/vov1.",
    ),
    (
        "canned: unknown message 'x'; the library has 'flood'",
        "canned",
        "Hãy chọn một bản tin thu sẵn.",
    ),
    (
        "start_at 2025-07-01T07:00:00+07:00 is in the past (server time 2025-07-01T01:30:00+00:00)",
        "at",
        "Giờ này đã qua; hãy chọn giờ muộn hơn.",
    ),
    (
        "expires_at 2025-07-01T07:00:00+07:00 is in the past (server time 2025-07-01T01:30Z)",
        "expires_at",
        "Giờ kết thúc đã qua; hãy chọn giờ muộn hơn.",
    ),
    (
        "expires_at 2025-07-09T07:00:00+07:00 is more than 48 h ahead (latest 2025-07-03T01:30Z)",
        "expires_at",
        "Một cảnh báo kéo dài tối đa 48 giờ.",
    ),
    (
        "rrule 'FREQ=FOO': unknown frequency",
        "days",
        "Không dùng được quy tắc lặp lại FREQ=FOO; hãy chọn lại các ngày.",
    ),
    (
        "alert 3 was created by ana: a different officer must confirm it",
        "form",
        "ana đã soạn cảnh báo này: phải có một cán bộ khác xác nhận.",
    ),
    (
        "alert 3 expired at 2025-07-01T01:30:00+00:00 before it was confirmed",
        "form",
        "Cảnh báo này đã hết hạn trước khi có người xác nhận.",
    ),
    ("alert 3 is already cancelled", "form", "Cảnh báo này đã kết thúc."),
    ("tin.wav: the file is empty (0 bytes)", "file", "Tệp trống."),
    (
        "tin.wav: the audio is entirely silent (digital zero)",
        "file",
        "Bản ghi im lặng: không có gì để nghe.",
    ),
    (
        "tin.wav: too long (1:02:03); the limit is 1:00:00",
        "file",
        "Bản ghi quá dài (1:02:03); tối đa 1:00:00.",
    ),
    (
        "tin.wav: truncated or corrupt: the file says 60.0 s but only 3.0 s could be decoded",
        "file",
        "Tệp bị cắt ngắn hoặc bị hỏng; hãy tải lên bản đầy đủ.",
    ),
    (
        "tin.wav: contains no audio stream",
        "file",
        "Tệp này không có âm thanh (có thể là ảnh hoặc văn bản).",
    ),
    (
        "tin.wav: unsupported audio format (ffmpeg: Decoder not found)",
        "file",
        "Không đọc được định dạng âm thanh này; hãy lưu thành MP3, WAV, OGG hoặc M4A rồi thử lại.",
    ),
    (
        "tin.wav: not readable audio, or corrupt (ffmpeg: Invalid data found when processing)",
        "file",
        "Không đọc được tệp này: đây không phải tệp âm thanh, hoặc tệp đã hỏng.",
    ),
    (
        "tin.wav: encoding to opus failed (ffmpeg: broken pipe)",
        "file",
        "Máy chủ không chuyển đổi được âm thanh này; hãy thử lại sau.",
    ),
]


def test_every_pattern_has_its_case() -> None:
    assert len(REFUSALS) == len(PATTERNS)
    for (english, _field, _vi), pattern in zip(REFUSALS, PATTERNS, strict=True):
        assert pattern.regex.search(english), (pattern.regex.pattern, english)


@pytest.mark.parametrize(("english", "field", "vietnamese"), REFUSALS)
def test_an_english_refusal_in_vietnamese_under_its_field(
    english: str, field: str, vietnamese: str
) -> None:
    with language("vi"):
        refusal = explain(HTTPException(422, english))
    assert (refusal.field, refusal.text) == (field, vietnamese)


def test_an_unknown_refusal_still_says_in_vietnamese_that_the_server_refused() -> None:
    with language("vi"):
        refusal = explain(HTTPException(422, "key 'x' is taken by programme 3"))
    assert refusal.text == "Máy chủ từ chối: key 'x' is taken by programme 3"


AT = datetime(2025, 7, 1, 22, 0, tzinfo=UTC)  # 05:00 on 2 July in Vietnam
CODED = {
    "clash": (
        ProgrammeError(
            "overlap …",
            409,
            code="clash",
            params={
                "station": "st-0",
                "at": AT,
                "first": "'Tin trùng [web-20250702-0500-abc123]' item 1 'Tin trùng' (05:00–05:01)",
                "second": "'broadcast 4 'Tin sáng'' (05:00–05:02)",
                "priority": "normal",
                "more": 0,
            },
        ),
        "at",
        "Giờ này trùng với chương trình khác: 'Tin trùng' mục 1 'Tin trùng' (05:00–05:01) trùng "
        "với 'bản tin 4 'Tin sáng'' (05:00–05:02) trên trạm st-0 lúc 02/07/2025 05:00. Hãy dời "
        "một trong hai, hoặc đặt mức ưu tiên khác.",
    ),
    "speech_too_long": (
        ProgrammeError(
            "items[2]: …",
            code="speech_too_long",
            params={"item": 2, "spoken_s": 41.5, "slot_s": 30.0},
        ),
        "items.2",
        "Mục 2: đọc văn bản mất 41,5 giây nhưng khung giờ chỉ có 30 giây. Hãy rút ngắn văn bản "
        "hoặc nới khung giờ.",
    ),
    "start_in_past": (
        RecurrenceError(
            "…",
            code="start_in_past",
            params={"start": datetime(2025, 7, 1, 7, 0), "now": AT.replace(hour=1)},
        ),
        "at",
        "Lần phát đầu 01/07/2025 07:00 đã qua (bây giờ là 01/07/2025 08:00); hãy chọn giờ muộn "
        "hơn.",
    ),
    "never_fires": (
        RecurrenceError("…", code="never_fires"),
        "days",
        "Với các ngày đã chọn, chương trình không bao giờ phát; hãy kiểm tra lại các ngày.",
    ),
    "never_fires_again": (
        RecurrenceError("…", code="never_fires_again", params={"last": None}),
        "days",
        "Với các ngày đã chọn, chương trình sẽ không phát thêm lần nào; hãy kiểm tra lại ngày.",
    ),
    "too_often": (
        RecurrenceError("…", code="too_often", params={"seconds": 1.0, "minimum": 60}),
        "days",
        "Lịch này phát cứ 1 giây một lần; hai lần phát phải cách nhau ít nhất 60 giây.",
    ),
    "tts_empty": (
        TtsTextError("text: …", "tts_empty"),
        "text",
        "Không có gì để đọc: văn bản đang trống.",
    ),
    "tts_unspeakable": (
        TtsTextError("text: …", "tts_unspeakable"),
        "text",
        "Không có gì để đọc: văn bản không có chữ hay số nào.",
    ),
    "tts_too_long": (
        TtsTextError("text: …", "tts_too_long", {"chars": 6001, "limit": 5000, "minutes": 6}),
        "text",
        "Văn bản có 6001 ký tự: quá dài để đọc trong một mục (tối đa 5000, khoảng 6 phút). Hãy "
        "chia thành nhiều mục.",
    ),
    "alert_no_message": (
        AlertError("an alert needs a message", code="alert_no_message"),
        "kind",
        "Cảnh báo chưa có nội dung: hãy viết văn bản, chọn tệp âm thanh hoặc một bản tin thu sẵn.",
    ),
    "inline_too_big": (
        AlertError(
            "audio_id: audio is 300 KiB …",
            code="inline_too_big",
            params={"field": "audio_id", "kib": 300, "limit_kib": 256},
        ),
        "audio_id",
        "Âm thanh nặng 300 KiB; một cảnh báo chỉ mang được tối đa 256 KiB. Hãy rút ngắn hoặc "
        "dùng bản tin thu sẵn.",
    ),
    "media_busy": (
        MediaBusy(30),
        "file",
        "Máy chủ đang bận chuyển đổi các bản ghi khác. Chưa có gì được lưu; hãy thử lại sau 30 "
        "giây.",
    ),
}


def test_every_code_has_its_case() -> None:
    assert set(CODED) == set(CODES)


@pytest.mark.parametrize("code", sorted(CODES))
def test_a_coded_refusal_in_vietnamese_even_behind_an_http_error(code: str) -> None:
    error, field, vietnamese = CODED[code]
    try:  # the API raises HTTPException(...) from the domain error: the code is still found
        try:
            raise error
        except Exception as exc:
            raise HTTPException(422, str(exc)) from exc
    except HTTPException as wrapped:
        with language("vi"):
            refusal = explain(wrapped)
    assert (refusal.field, refusal.text) == (field, vietnamese)


def test_the_same_refusal_in_english() -> None:
    error, _field, _vi = CODED["clash"]
    with language("en"):
        text = explain(error).text
    assert text == (
        "This time clashes with another programme: 'Tin trùng' item 1 'Tin trùng' (05:00–05:01) "
        "overlaps 'bulletin 4 'Tin sáng'' (05:00–05:02) on station st-0 at 02/07/2025 05:00. "
        "Move one of them or give one a different priority."
    )


def test_a_tts_item_refusal_names_the_item_and_the_engine() -> None:
    outer = ProgrammeError("items[3]: text-to-speech: espeak-ng is not installed", 503)
    outer.__cause__ = TtsEngineMissing("espeak-ng is not installed")
    with language("vi"):
        refusal = explain(outer)
    assert (refusal.field, refusal.text) == (
        "items.3",
        "Máy chủ này chưa cài chức năng đọc văn bản.",
    )


STATION_SAYS = [
    (
        "unreachable since 2025-07-01T01:30:00+00:00 (12 min)",
        "Mất liên lạc từ 01/07/2025 08:30 (12 phút)",
    ),
    ("amplifier reports overcurrent", "Amply báo lỗi: overcurrent"),
    ("relay board does not respond", "Bo rơ-le không trả lời"),
    (
        "amplifier draws 12 mA while playing",
        "Amply chỉ tiêu thụ 12 mA khi đang phát (loa bị đứt dây?)",
    ),
    ("amp_fault: thermal", "Amply báo lỗi thermal"),
    ("relay_fault: stuck", "Rơ-le báo lỗi stuck"),
    ("4.5 % disk free (alarm below 10 %)", "Bộ nhớ chỉ còn trống 4,5 % (báo sự cố khi dưới 10 %)"),
    ("CPU at 81.2 °C (alarm above 75 °C)", "Bộ xử lý nóng 81,2 °C (báo sự cố khi trên 75 °C)"),
    (
        "clock off by +2300 ms (alarm beyond ±1000 ms)",
        "Đồng hồ của trạm lệch +2300 ms (báo sự cố khi lệch quá ±1 000 ms)",
    ),
    (
        "not played: b12.1 (failed), p3.20250701T0500.1 (delivered) and 4 more",
        "Chưa phát: b12.1 (Lỗi), p3.20250701T0500.1 (Đã nhận lịch) và còn 4 nữa",
    ),
    ("amplifier on for 60 s", "amply bật trong 60 giây"),
    ("volume 80 %", "âm lượng 80 %"),
    ("restarting", "đang khởi động lại"),
    ("this station has no test tone", "trạm này không có âm thử"),
    ("test tone played", "âm thử: Đã phát xong"),
    ("plan arrived after the item ended", "lịch phát đến sau khi mục đã kết thúc"),
    ("played 3 time(s)", "đã phát 3 lần"),
    ("stopped after 0 of 3 repetitions", "dừng sau 0 trên 3 lần phát"),
    ("stopped at its expiry after 1 of 3 repetitions", "dừng khi hết hạn, sau 1 trên 3 lần phát"),
    ("cancelled before this copy arrived: not played", "bị huỷ trước khi đến trạm: không phát"),
    (
        "cancelled before the alert arrived: it will not play",
        "bị huỷ trước khi đến trạm: không phát",
    ),
    (
        "a copy of an alert already received: not played again",
        "bản sao của cảnh báo đã nhận: không phát lại",
    ),
    ("real alert al-1 is playing", "đang phát cảnh báo thật"),
    ("a drill never cuts one", "diễn tập không bao giờ ngắt cảnh báo thật"),
    ("canned audio abc123 is not in the cache", "bản ghi sẵn không có trên trạm"),
    (
        "without its tone: not in the cache",
        "không có tiếng còi báo hiệu (không có trên trạm)",
    ),
    ("part 2 still playing 5 s late", "phần 2 vẫn đang phát, trễ 5 giây"),
    ("already in the cache", "đã có sẵn trên trạm"),
    ("playing the fallback abc123", "đang phát âm thanh dự phòng"),
    (
        "no fallback in the cache: silent until the stream returns",
        "không có âm thanh dự phòng: im lặng cho đến khi có lại sóng",
    ),
    ("switching on: port closed", "khi bật: port closed"),
    ("audio not downloaded by the start time", "âm thanh chưa tải xong trước giờ phát"),
    (
        "the cached audio could not be verified by the start time",
        "không kiểm tra được âm thanh trên trạm trước giờ phát",
    ),
    ("alert al-1 was playing", "đang phát cảnh báo khẩn cấp"),
    ("drill al-2 lasted the whole window", "cảnh báo khẩn cấp chiếm hết thời gian"),
    ("its window ended before it began", "hết giờ trước khi kịp bắt đầu"),
    ("could not start within 30 s", "không bắt đầu được trong 30 giây"),
    ("p3.1.1.202612090530 (priority) was playing", "đang phát một mục mức “Ưu tiên”"),
    ("pre-empted by b-4 (emergency)", "nhường chỗ cho một mục mức “Khẩn cấp”"),
    ("removed from the plan", "đã bỏ khỏi lịch"),
    ("by alert al-9", "bị thay bằng cảnh báo mới hơn"),
    ("the station restarted while it played", "trạm khởi động lại khi đang phát"),
    ("the station was not running at its time", "trạm không hoạt động vào giờ phát"),
    (
        "amplifier on and playing b-4 but drawing 12 mA",
        "amply đang bật và đang phát nhưng chỉ tiêu thụ 12 mA",
    ),
    ("trusted keys: k1, k2", "đã cập nhật khoá tin cậy"),
]


def test_every_station_pattern_has_its_case() -> None:
    assert len(STATION_SAYS) == len(STATION_PATTERNS)
    for (english, _vi), pattern in zip(STATION_SAYS, STATION_PATTERNS, strict=True):
        assert pattern.regex.search(english), (pattern.regex.pattern, english)


@pytest.mark.parametrize(("english", "vietnamese"), STATION_SAYS)
def test_what_a_station_says_in_vietnamese(english: str, vietnamese: str) -> None:
    with language("vi"):
        assert station_words(english) == vietnamese
    with language("en"):
        assert station_words(english)  # English readers get a sentence too, never nothing


def test_an_alarm_of_several_reasons_is_translated_part_by_part() -> None:
    with language("vi"):
        said = station_words("relay board does not respond; relay_fault: stuck; a new thing")
    assert said == "Bo rơ-le không trả lời; Rơ-le báo lỗi stuck; a new thing"
