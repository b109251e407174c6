"""Vietnamese text normalisation on real notice phrasing: what a commune announcer says."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.tts.normalise import normalise, read_decimal, read_digits, read_number


@pytest.mark.parametrize(
    ("number", "spoken"),
    [
        (0, "không"),
        (5, "năm"),
        (10, "mười"),
        (11, "mười một"),
        (14, "mười bốn"),
        (15, "mười lăm"),
        (20, "hai mươi"),
        (21, "hai mươi mốt"),
        (24, "hai mươi tư"),
        (25, "hai mươi lăm"),
        (55, "năm mươi lăm"),
        (100, "một trăm"),
        (101, "một trăm linh một"),
        (105, "một trăm linh năm"),
        (110, "một trăm mười"),
        (115, "một trăm mười lăm"),
        (121, "một trăm hai mươi mốt"),
        (1000, "một nghìn"),
        (1005, "một nghìn không trăm linh năm"),
        (1945, "một nghìn chín trăm bốn mươi lăm"),
        (2026, "hai nghìn không trăm hai mươi sáu"),
        (10_000, "mười nghìn"),
        (100_000, "một trăm nghìn"),
        (1_000_005, "một triệu không trăm linh năm"),
        (1_005_000, "một triệu không trăm linh năm nghìn"),
        (30_500_000, "ba mươi triệu năm trăm nghìn"),
        (1_263_600, "một triệu hai trăm sáu mươi ba nghìn sáu trăm"),
        (1_000_000_000, "một tỷ"),
        (2_500_000_000, "hai tỷ năm trăm triệu"),
        (3_000_000_021, "ba tỷ không trăm hai mươi mốt"),
        (1_000_000_000_000, "một nghìn tỷ"),
    ],
)
def test_numbers_read_the_vietnamese_way(number: int, spoken: str) -> None:
    assert read_number(number) == spoken


def test_the_southern_form_says_le() -> None:
    assert read_number(105, odd="lẻ") == "một trăm lẻ năm"
    assert normalise("Phòng 105", odd="lẻ") == "Phòng một trăm lẻ năm"


def test_negative_numbers_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        read_number(-1)


def test_decimals_and_digits() -> None:
    assert read_decimal("2", "5") == "hai phẩy năm"
    assert read_decimal("3", "14") == "ba phẩy mười bốn"
    assert read_decimal("0", "05") == "không phẩy không năm"
    assert read_digits("0912") == "không chín một hai"


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        # money: dot is the thousands separator, comma the decimal point
        ("30.500.000 đồng", "ba mươi triệu năm trăm nghìn đồng"),
        ("Mức hỗ trợ 1.500.000đ/hộ", "Mức hỗ trợ một triệu năm trăm nghìn đồng một hộ"),
        ("giá 500.000 VNĐ", "giá năm trăm nghìn đồng"),
        ("30,500,000 VND", "ba mươi triệu năm trăm nghìn đồng"),
        ("phí 50k", "phí năm mươi nghìn"),
        ("thiệt hại 1,5 tỷ đồng", "thiệt hại một phẩy năm tỷ đồng"),
        ("tăng 2,5 lần", "tăng hai phẩy năm lần"),
        ("đạt 0,05", "đạt không phẩy không năm"),
        # dates
        (
            "ngày 25/11/2026",
            "ngày hai mươi lăm tháng mười một năm hai nghìn không trăm hai mươi sáu",
        ),
        (
            "Hạn chót 25/11/2026.",
            "Hạn chót ngày hai mươi lăm tháng mười một năm hai nghìn không trăm hai mươi sáu.",
        ),
        ("ngày 5/6", "ngày năm tháng sáu"),
        ("từ 5/6 đến 10/6", "từ ngày năm tháng sáu đến ngày mười tháng sáu"),
        ("ngày 05-06-2026", "ngày năm tháng sáu năm hai nghìn không trăm hai mươi sáu"),
        ("2026-11-25", "ngày hai mươi lăm tháng mười một năm hai nghìn không trăm hai mươi sáu"),
        ("tháng 11/2026", "tháng mười một năm hai nghìn không trăm hai mươi sáu"),
        ("ngày 20-25/11", "ngày hai mươi đến ngày hai mươi lăm tháng mười một"),
        (
            "Cao Bằng, ngày 25 tháng 11 năm 2026",
            "Cao Bằng, ngày hai mươi lăm tháng mười một năm hai nghìn không trăm hai mươi sáu",
        ),
        # times
        ("lúc 05:00", "lúc năm giờ"),
        ("lúc 17:30", "lúc mười bảy giờ ba mươi phút"),
        ("lúc 17h30 chiều nay", "lúc mười bảy giờ ba mươi phút chiều nay"),
        ("từ 7h đến 11h", "từ bảy giờ đến mười một giờ"),
        ("7g30 sáng", "bảy giờ ba mươi phút sáng"),
        ("05:00 - 06:30", "năm giờ đến sáu giờ ba mươi phút"),
        ("lúc 05:00:30", "lúc năm giờ không phút ba mươi giây"),
        # percentages, units, ranges
        ("giảm 15%", "giảm mười lăm phần trăm"),
        ("tăng 2,5%", "tăng hai phẩy năm phần trăm"),
        ("gió giật 50 km/h", "gió giật năm mươi ki lô mét một giờ"),
        ("lượng mưa 200-300 mm", "lượng mưa hai trăm đến ba trăm mi li mét"),
        ("xả 1.500 m3/s", "xả một nghìn năm trăm mét khối trên giây"),
        ("nhiệt độ -2°C", "nhiệt độ âm hai độ C"),
        ("diện tích 12 ha", "diện tích mười hai héc ta"),
        (
            "giai đoạn 2021-2025",
            "giai đoạn hai nghìn không trăm hai mươi mốt đến hai nghìn không trăm hai mươi lăm",
        ),
        # ordinals and Roman numerals
        ("thứ 2", "thứ hai"),
        ("Thứ 4 và thứ 7 hằng tuần", "Thứ tư và thứ bảy hằng tuần"),
        ("lần thứ 1", "lần thứ nhất"),
        ("quý IV", "quý bốn"),
        ("Đại hội XIII", "Đại hội mười ba"),
        ("Hội nghị lần thứ IV", "Hội nghị lần thứ tư"),
        # telephone numbers, digit by digit in their groups
        ("Gọi 0912345678", "Gọi không chín một hai, ba bốn năm, sáu bảy tám"),
        (
            "Điện thoại: 0206.3852.123",
            "Điện thoại: không hai không sáu, ba tám năm hai, một hai ba",
        ),
        ("đường dây nóng 113", "đường dây nóng một một ba"),
        ("hãy gọi 114 ngay", "hãy gọi một một bốn ngay"),
        ("liên hệ 150 hộ dân", "liên hệ một trăm năm mươi hộ dân"),
        ("tổng đài 1022", "tổng đài một không hai hai"),
        ("SĐT 0912 345 678", "số điện thoại không chín một hai, ba bốn năm, sáu bảy tám"),
        # official abbreviations
        ("UBND xã", "Ủy ban nhân dân xã"),
        ("HĐND huyện", "Hội đồng nhân dân huyện"),
        ("Sở TT&TT tỉnh Cao Bằng", "Sở Thông tin và Truyền thông tỉnh Cao Bằng"),
        ("Ban công tác MTTQ", "Ban công tác Mặt trận Tổ quốc"),
        ("đội PCCC", "đội phòng cháy chữa cháy"),
        ("chiến sĩ CAND", "chiến sĩ Công an nhân dân"),
        ("BCH Quân sự xã", "Ban chỉ huy Quân sự xã"),
        ("trường THCS và THPT", "trường trung học cơ sở và trung học phổ thông"),
        ("TP. Cao Bằng", "thành phố Cao Bằng"),
        ("P. Hợp Giang, Q.1", "phường Hợp Giang, quận một"),
        ("KP 3", "khu phố ba"),
        ("thẻ BHYT, sổ BHXH", "thẻ bảo hiểm y tế, sổ bảo hiểm xã hội"),
        ("vùng ĐBSCL", "vùng đồng bằng sông Cửu Long"),
        ("Sở NN&PTNT", "Sở Nông nghiệp và Phát triển nông thôn"),
        ("QL3 đoạn qua xã", "quốc lộ ba đoạn qua xã"),
        ("dịch COVID-19", "dịch cô vít mười chín"),
        (
            "Thông tư số 39/2020/TT-BTTTT",
            "Thông tư số ba mươi chín trên hai nghìn không trăm hai mươi trên TT-BTTTT",
        ),
        # things that must stay as they are
        ("Xin chào bà con", "Xin chào bà con"),
        ("tại P.", "tại P."),
        ("cúm H5N1", "cúm H năm N một"),
        ("Điều 2.5.", "Điều hai chấm năm."),
    ],
)
def test_notice_phrases(text: str, spoken: str) -> None:
    assert normalise(text) == spoken


def test_a_whole_notice() -> None:
    notice = (
        "THÔNG BÁO\n"
        "UBND xã Cao Bồ thông báo: từ 7h30 ngày 25/11/2026 đến hết 30/11/2026, "
        "thu BHYT hộ gia đình năm 2027 là 1.263.600 đồng/người.\n"
        "Mọi thắc mắc liên hệ 0206.3852.123."
    )
    assert normalise(notice) == (
        "THÔNG BÁO.\n"
        "Ủy ban nhân dân xã Cao Bồ thông báo: từ bảy giờ ba mươi phút ngày hai mươi lăm "
        "tháng mười một năm hai nghìn không trăm hai mươi sáu đến hết ngày ba mươi tháng "
        "mười một năm hai nghìn không trăm hai mươi sáu, thu bảo hiểm y tế hộ gia đình năm "
        "hai nghìn không trăm hai mươi bảy là một triệu hai trăm sáu mươi ba nghìn sáu trăm "
        "đồng một người.\n"
        "Mọi thắc mắc liên hệ không hai không sáu, ba tám năm hai, một hai ba."
    )


def test_no_digit_survives_in_ordinary_text() -> None:
    text = (
        "Bão số 3 cách bờ 150 km, gió cấp 12, giật cấp 15. Mưa 100-200 mm từ 18h ngày 5/9. "
        "Hồ Thác Bà xả 2.500 m3/s lúc 06:00. Có 1.234 hộ, 15,5% dân số, 3 xã."
    )
    spoken = normalise(text)
    assert not any(ch.isdigit() for ch in spoken), spoken


def test_bullets_and_headings_become_pauses() -> None:
    text = "Lịch tiêm\n- Thôn Nà Rị\n- Thôn Bản Gủn\n"
    assert normalise(text) == "Lịch tiêm.\nThôn Nà Rị.\nThôn Bản Gủn"


def test_composed_and_decomposed_accents_read_the_same() -> None:
    import unicodedata

    text = "Ủy ban nhân dân xã thông báo lúc 17h30"
    assert normalise(unicodedata.normalize("NFD", text)) == normalise(text)


def test_the_normaliser_is_pure() -> None:
    """No engine, database or web framework is imported to normalise text."""
    code = (
        "import sys, server.tts.normalise; "
        "print(sorted(m for m in ('fastapi','sqlmodel','sqlalchemy','numpy','paho') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


ALPHABET = "0123456789 .,:/-–%đĐhgkKmT&()\n" + "UBNDHĐQPáàảãạăâêôơưxã" + "abcxyz"


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=80))
def test_any_text_normalises_without_error_and_stably(text: str) -> None:
    """Whatever an operator types, normalising never fails, and twice is the same as once
    for what a number reader would touch (no digits are left to expand)."""
    spoken = normalise(text)
    assert isinstance(spoken, str)
    assert normalise(spoken) == normalise(normalise(spoken))


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=999_999_999_999))
def test_every_number_in_vietnamese_thousands_notation_reads_as_words(value: int) -> None:
    written = f"{value:,}".replace(",", ".")
    spoken = normalise(f"Số tiền {written} đồng")
    assert spoken == f"Số tiền {read_number(value)} đồng"
    assert not any(ch.isdigit() for ch in spoken)
