"""Vietnamese text normalisation: what an operator types becomes what a reader says.

Speech engines read digits and capitals badly: espeak-ng says "30.500.000" digit group
by digit group and spells "UBND" letter by letter. A commune announcer reads "ba mươi
triệu năm trăm nghìn đồng" and "Ủy ban nhân dân". This module does that expansion,
as a pure function of the text (no engine, no I/O), so it is tested on real notices.

Theory of operation
-------------------
Rules run in a fixed order, each a regular expression with a replacement function;
an earlier rule consumes what a later one would misread:

1. clean-up: Unicode NFC, quotes, bullets; a line without final punctuation gets a
   full stop, so a heading is followed by a pause;
2. abbreviations (official names, units of administration, weekday-free): "UBND",
   "TT&TT", "TP.", "Q.", "P.", "COVID-19";
3. dates ("25/11/2026", "ngày 5/6", "11/2026", "2026-11-25", "20-25/11") and times
   ("05:00", "17h30", "7g") — ranges between them read "đến";
4. telephone-like digit strings (a leading 0 and 9-11 digits, or anything after
   "điện thoại", "hotline", "gọi"…) read digit by digit in their groups;
5. ordinals ("thứ 2" → "thứ hai", "thứ 4" → "thứ tư"), Roman numerals after "quý",
   "khóa", "lần thứ"…, money ("đ", "VNĐ", "500k"), percentages, units ("km/h", "mm",
   "m3/s", "°C"), negative temperatures, numeric ranges ("5-7" → "năm đến bảy");
6. every remaining number: dot as the thousands separator and comma as the decimal
   point (Vietnamese usage), read with the spoken forms "mốt", "tư", "lăm", "linh"
   (or "lẻ", the southern form), "mươi", "nghìn", "triệu", "tỷ".

``read_number`` and ``read_digits`` are public for callers that build sentences.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Literal

Odd = Literal["linh", "lẻ"]

DIGITS = ("không", "một", "hai", "ba", "bốn", "năm", "sáu", "bảy", "tám", "chín")
_MARK = "\ue000"  # private-use: "a date or time ended here", so a dash after it reads "đến"
_MAX_DIGITS = 15  # beyond a thousand tỷ nobody reads a number as a quantity

# Official abbreviations in public notices. Capitalised as the words are written in the
# middle of a sentence; the engine does not hear capitals.
ABBREVIATIONS: dict[str, str] = {
    "UBND": "Ủy ban nhân dân",
    "HĐND": "Hội đồng nhân dân",
    "UBMTTQ": "Ủy ban Mặt trận Tổ quốc",
    "MTTQ": "Mặt trận Tổ quốc",
    "TT&TT": "Thông tin và Truyền thông",
    "VH-TT": "Văn hóa - Thông tin",
    "VHTT": "Văn hóa Thông tin",
    "NN&PTNT": "Nông nghiệp và Phát triển nông thôn",
    "TN&MT": "Tài nguyên và Môi trường",
    "GD&ĐT": "Giáo dục và Đào tạo",
    "LĐ-TB&XH": "Lao động - Thương binh và Xã hội",
    "KT-XH": "kinh tế - xã hội",
    "PCTT&TKCN": "phòng chống thiên tai và tìm kiếm cứu nạn",
    "PCTT": "phòng chống thiên tai",
    "TKCN": "tìm kiếm cứu nạn",
    "PCCC": "phòng cháy chữa cháy",
    "PCCC&CNCH": "phòng cháy chữa cháy và cứu nạn cứu hộ",
    "CNCH": "cứu nạn cứu hộ",
    "CAND": "Công an nhân dân",
    "QĐND": "Quân đội nhân dân",
    "BCHQS": "Ban chỉ huy quân sự",
    "BCH": "Ban chỉ huy",
    "BCĐ": "Ban chỉ đạo",
    "BTV": "Ban thường vụ",
    "BQL": "Ban quản lý",
    "BTC": "Ban tổ chức",
    "UBKT": "Ủy ban kiểm tra",
    "ĐCSVN": "Đảng Cộng sản Việt Nam",
    "CHXHCN": "Cộng hòa xã hội chủ nghĩa",
    "ĐTNCS": "Đoàn Thanh niên Cộng sản",
    "HLHPN": "Hội Liên hiệp Phụ nữ",
    "HND": "Hội Nông dân",
    "CCB": "Cựu chiến binh",
    "HTX": "hợp tác xã",
    "THCS": "trung học cơ sở",
    "THPT": "trung học phổ thông",
    "ĐH": "đại học",
    "TTYT": "Trung tâm Y tế",
    "TYT": "Trạm Y tế",
    "BHYT": "bảo hiểm y tế",
    "BHXH": "bảo hiểm xã hội",
    "BHTN": "bảo hiểm thất nghiệp",
    "CCCD": "căn cước công dân",
    "CMND": "chứng minh nhân dân",
    "ATGT": "an toàn giao thông",
    "CSGT": "cảnh sát giao thông",
    "VSATTP": "vệ sinh an toàn thực phẩm",
    "ATTP": "an toàn thực phẩm",
    "KHHGĐ": "kế hoạch hóa gia đình",
    "ĐBSCL": "đồng bằng sông Cửu Long",
    "TP.HCM": "Thành phố Hồ Chí Minh",
    "TPHCM": "Thành phố Hồ Chí Minh",
    "HCM": "Hồ Chí Minh",
    "TW": "Trung ương",
    "TƯ": "Trung ương",
    "VN": "Việt Nam",
    "KP": "khu phố",
    "SĐT": "số điện thoại",
    "ĐT": "điện thoại",
    "QL": "quốc lộ",
    "TL": "tỉnh lộ",
    "USD": "đô la Mỹ",
    "VNĐ": "đồng",
    "VND": "đồng",
    "vnđ": "đồng",
    "COVID-19": "cô vít mười chín",
    "COVID": "cô vít",
}

# Abbreviations with a full stop, read only before a name or a number ("P. Hợp Giang",
# "Q.1", "TP. Cao Bằng"): a capital P at the end of a sentence stays a letter.
DOTTED: dict[str, str] = {
    "TP.": "thành phố",
    "Tp.": "thành phố",
    "TX.": "thị xã",
    "TT.": "thị trấn",
    "Q.": "quận",
    "P.": "phường",
    "H.": "huyện",
    "X.": "xã",
}

UNITS: dict[str, str] = {
    "km/h": "ki lô mét một giờ",
    "m3/s": "mét khối trên giây",
    "m³/s": "mét khối trên giây",
    "km²": "ki lô mét vuông",
    "km2": "ki lô mét vuông",
    "km": "ki lô mét",
    "mm": "mi li mét",
    "cm": "xăng ti mét",
    "m²": "mét vuông",
    "m2": "mét vuông",
    "m³": "mét khối",
    "m3": "mét khối",
    "m": "mét",
    "kg": "ki lô gam",
    "ha": "héc ta",
    "°C": "độ C",
    "oC": "độ C",
    "°": "độ",
    "kWh": "ki lô oát giờ",
    "kW": "ki lô oát",
    "MW": "mê ga oát",
    "%": "phần trăm",
    "‰": "phần nghìn",
}

ROMAN_AFTER = (
    "quý", "khóa", "khoá", "kỳ", "lần thứ", "thế kỷ", "chương", "phần", "mục",
    "đại hội", "hội nghị", "cấp", "vùng",
)  # fmt: skip
PHONE_AFTER = (
    "số điện thoại", "điện thoại", "đt", "sđt", "hotline", "đường dây nóng", "gọi",
    "gọi số", "liên hệ", "số máy", "fax", "zalo", "tổng đài",
)  # fmt: skip
WEAK_PHONE_AFTER = frozenset({"gọi", "gọi số", "liên hệ"})
PER_WORDS = ("giờ", "ngày", "tháng", "năm", "tuần", "người", "hộ", "lượt", "lần", "kg", "ha")


# ------------------------------------------------------------------ numbers


def read_digits(digits: str) -> str:
    """Each digit as a word: "0912" → "không chín một hai"."""
    return " ".join(DIGITS[int(d)] for d in digits if d.isdigit())


def _read_triple(n: int, full: bool, odd: Odd) -> str:
    """0-999; ``full`` when a higher group precedes (so "không trăm", "linh" are said)."""
    hundreds, tens, units = n // 100, n // 10 % 10, n % 10
    words: list[str] = []
    if hundreds or full:
        words += [DIGITS[hundreds], "trăm"]
    if tens == 0:
        if units and words:
            words += [odd, DIGITS[units]]
        elif units:
            words.append(DIGITS[units])
    elif tens == 1:
        words.append("mười")
        if units:
            words.append("lăm" if units == 5 else DIGITS[units])
    else:
        words += [DIGITS[tens], "mươi"]
        if units:
            words.append({1: "mốt", 4: "tư", 5: "lăm"}.get(units, DIGITS[units]))
    return " ".join(words)


def _read_below_billion(n: int, full: bool, odd: Odd) -> str:
    groups = [(n // 1_000_000, "triệu"), (n // 1000 % 1000, "nghìn"), (n % 1000, "")]
    words: list[str] = []
    for value, name in groups:
        if value == 0:
            continue
        words.append(_read_triple(value, full or bool(words), odd))
        if name:
            words.append(name)
    return " ".join(words)


def read_number(n: int, odd: Odd = "linh") -> str:
    """A non-negative integer the Vietnamese way: 21 → "hai mươi mốt", 105 → "một trăm
    linh năm", 2026 → "hai nghìn không trăm hai mươi sáu", 30500000 → "ba mươi triệu năm
    trăm nghìn", 1000000000 → "một tỷ"."""
    if n < 0:
        raise ValueError(f"read_number takes a non-negative integer, not {n}")
    if n == 0:
        return "không"
    if n >= 1_000_000_000:
        high, low = divmod(n, 1_000_000_000)
        words = f"{read_number(high, odd)} tỷ"
        return f"{words} {_read_below_billion(low, True, odd)}" if low else words
    return _read_below_billion(n, False, odd)


def read_decimal(integer: str, fraction: str, odd: Odd = "linh") -> str:
    """ "2", "5" → "hai phẩy năm"; "0", "05" → "không phẩy không năm"."""
    whole = read_number(int(integer), odd)
    zeros = len(fraction) - len(fraction.lstrip("0"))
    rest = fraction[zeros:]
    words = ["không"] * zeros
    if rest:
        words.append(read_number(int(rest), odd) if len(rest) <= 3 else read_digits(rest))
    return f"{whole} phẩy {' '.join(words)}"


def _read_numeral(text: str, odd: Odd) -> str:
    """Digits as written (leading zeros, too many digits) to words."""
    if len(text) > _MAX_DIGITS or (text.startswith("0") and len(text) > 2):
        return read_digits(text)
    return read_number(int(text), odd)


# -------------------------------------------------------------------- rules

Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], str]]


def _words_alternation(words: list[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_ABBREV_RE = re.compile(
    rf"(?<![\w&.-])({_words_alternation(list(ABBREVIATIONS))})(?![^\W\d_]|[&-]\w)"
)
_DOTTED_RE = re.compile(
    rf"(?<![\w.])({_words_alternation(list(DOTTED))})\s*(?=[A-ZĐÂĂÊÔƠƯÁÀẢÃẠ\d]|[^\W\d_]*[A-Z])"
)
_DOCUMENT_RE = re.compile(r"(?<![\d/])(\d{1,5})/(\d{4})/([A-ZĐ][\w&-]*)")
_DATE_RANGE_RE = re.compile(
    r"(?:\b([Nn]gày)\s+)?(?<![\d/.])(\d{1,2})\s*[-–]\s*(\d{1,2})/(\d{1,2})(?:/(\d{4}))?(?![\d/])"
)
_DATE_RE = re.compile(
    r"(?:\b([Nn]gày)\s+)?(?<![\d/.,])(\d{1,2})([/.-])(\d{1,2})\3(\d{4})(?![\d/.-]\d)"
)
_ISO_DATE_RE = re.compile(r"(?<![\d/.-])(\d{4})-(\d{2})-(\d{2})(?![\d-])")
_DAY_MONTH_RE = re.compile(r"(?:\b([Nn]gày)\s+)?(?<![\d/.,])(\d{1,2})/(\d{1,2})(?![\d/])")
_MONTH_YEAR_RE = re.compile(r"(?:\b([Tt]háng)\s+)?(?<![\d/.,])(\d{1,2})/(\d{4})(?![\d/])")
_CLOCK_RE = re.compile(r"(?<![\d:.,])(\d{1,2}):(\d{2})(?::(\d{2}))?(?![\d:])")
_HOUR_RE = re.compile(
    r"(?<![\w.,:/])(\d{1,2})\s?[hg](?:\s?(\d{1,2})\s?(?:phút|ph|p|')?)?(?![^\W\d_])"
)
_RANGE_AFTER_MARK_RE = re.compile(rf"{_MARK}\s*[-–—]\s*(?=\S)")
_PHONE_RE = re.compile(r"(?<![\d.,])(\+84|0)(\d{1,4})((?:[ .-]?\d{2,4}){1,4})(?![\d]|[.,]\d)")
_PHONE_AFTER_RE = re.compile(
    rf"(?i)(?<!\w)({_words_alternation(list(PHONE_AFTER))})(\s*(?:là|số)?\s*:?\s*)"
    r"(\+?\d[\d .-]{1,18}\d)(?![\d]|[.,]\d)"
)
_ORDINAL_RE = re.compile(r"\b([Tt]hứ)\s+(\d{1,3})(?!\d|[.,]\d)")
_ROMAN_RE = re.compile(
    rf"(?i)\b({_words_alternation(list(ROMAN_AFTER))})\s+(?-i:([IVXLC]+))(?![\w])"
)
_NEGATIVE_RE = re.compile(r"(?<![\w)])[-−–](?=\d+(?:,\d+)?\s?(?:°|oC\b|độ))")
_MONEY_RE = re.compile(r"(?<=\d)\s?(?:[đĐ]|k|K|tr)(?![^\W\d_])")
_UNIT_RE = re.compile(rf"(?<=\d)\s?({_words_alternation(list(UNITS))})(?![^\W\d_]|[²³]|/(?:h|s)\b)")
_NUM_RANGE_RE = re.compile(r"(?<=\d)\s?[-–]\s?(?=\d)")
_DOT_DECIMAL_RE = re.compile(r"(?<![\d.,])(\d+)\.(\d{1,2}|\d{4,})(?!\d|[.,]\d)")
_NUMBER_RE = re.compile(r"(?<!\d)(\d{1,3}(?:\.\d{3})+|\d{1,3}(?:,\d{3}){2,}|\d+)(?:,(\d+))?(?!\d)")
_PER_RE = re.compile(rf"(?<=[^\W\d_])/(?=(?:{'|'.join(PER_WORDS)})\b)")
_ROMAN_VALUES = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100}


def _roman(text: str) -> int | None:
    total, previous = 0, 0
    for ch in reversed(text):
        value = _ROMAN_VALUES[ch]
        total += -value if value < previous else value
        previous = max(previous, value)
    return total if 0 < total < 400 else None


def _valid_date(day: int, month: int) -> bool:
    return 1 <= day <= 31 and 1 <= month <= 12


def _group_phone(digits: str) -> list[str]:
    """Groups as a Vietnamese reads an unseparated number: 0912 345 678, 0206 3852 123."""
    if len(digits) <= 4:
        return [digits]
    if len(digits) == 10:
        return [digits[:4], digits[4:7], digits[7:]]
    if len(digits) == 11:
        return [digits[:4], digits[4:8], digits[8:]]
    head = len(digits) % 3 or 3
    return [digits[:head]] + [digits[i : i + 3] for i in range(head, len(digits), 3)]


def _speak_phone(raw: str) -> str:
    prefix = ""
    if raw.startswith("+84"):
        prefix, raw = "cộng tám tư, ", raw[3:]
    elif raw.startswith("+"):
        prefix, raw = "cộng ", raw[1:]
    groups = [g for g in re.split(r"[ .-]+", raw.strip()) if g]
    if len(groups) == 1:
        groups = _group_phone(groups[0])
    return prefix + ", ".join(read_digits(g) for g in groups)


def _rules(odd: Odd) -> list[Rule]:
    """The rules in the order they must run; see the module docstring."""

    def num(text: str) -> str:
        return _read_numeral(text, odd)

    def date_words(day: str, month: str, year: str | None, word: str | None) -> str:
        spoken = f"{word or 'ngày'} {num(day)} tháng {num(month)}"
        return f"{spoken} năm {read_number(int(year), odd)}{_MARK}" if year else spoken + _MARK

    def date_range(m: re.Match[str]) -> str:
        word, first, last, month, year = m.groups()
        if not (_valid_date(int(first), int(month)) and _valid_date(int(last), int(month))):
            return m.group()
        return f"{word or 'ngày'} {num(first)} đến {date_words(last, month, year, None)}"

    def date(m: re.Match[str]) -> str:
        word, day, _sep, month, year = m.groups()
        if not _valid_date(int(day), int(month)):
            return m.group()
        return date_words(day, month, year, word)

    def iso_date(m: re.Match[str]) -> str:
        year, month, day = m.groups()
        if not _valid_date(int(day), int(month)):
            return m.group()
        return date_words(day, month, year, None)

    def day_month(m: re.Match[str]) -> str:
        word, day, month = m.groups()
        if not _valid_date(int(day), int(month)):
            return m.group()
        return date_words(day, month, None, word)

    def month_year(m: re.Match[str]) -> str:
        word, month, year = m.groups()
        if not 1 <= int(month) <= 12:
            return m.group()
        return f"{word or 'tháng'} {num(month)} năm {read_number(int(year), odd)}{_MARK}"

    def clock_words(hour: str, minute: str | None, second: str | None) -> str | None:
        h, mi, s = int(hour), int(minute or 0), int(second or 0)
        if h > 24 or mi > 59 or s > 59:
            return None
        words = f"{read_number(h, odd)} giờ"
        if mi or s:
            words += f" {read_number(mi, odd)} phút"
        if s:
            words += f" {read_number(s, odd)} giây"
        return words + _MARK

    def clock(m: re.Match[str]) -> str:
        return clock_words(*m.groups()) or m.group()

    def hour(m: re.Match[str]) -> str:
        return clock_words(m.group(1), m.group(2), None) or m.group()

    def phone_after(m: re.Match[str]) -> str:
        keyword, glue, number = m.groups()
        digits = re.sub(r"\D", "", number)
        # "gọi 113" is a number to dial, "liên hệ 150 hộ" a quantity: after a weak keyword
        # only a long number or an emergency number (11x) is read digit by digit.
        weak = keyword.lower() in WEAK_PHONE_AFTER
        if len(digits) < 3 or (weak and len(digits) < 5 and not re.fullmatch(r"11\d", digits)):
            return m.group()
        return f"{keyword}{glue}{_speak_phone(number)}"

    def phone(m: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", m.group())
        if m.group(1) == "+84":
            digits = "0" + digits[2:]
        if not 9 <= len(digits) <= 11:
            return m.group()
        return _speak_phone(m.group())

    def ordinal(m: re.Match[str]) -> str:
        word, value = m.group(1), int(m.group(2))
        spoken = {1: "nhất", 4: "tư"}.get(value) or read_number(value, odd)
        return f"{word} {spoken}"

    def roman(m: re.Match[str]) -> str:
        value = _roman(m.group(2))
        if value is None:
            return m.group()
        spoken = {1: "nhất", 4: "tư"}.get(value) if m.group(1).lower() == "lần thứ" else None
        return f"{m.group(1)} {spoken or read_number(value, odd)}"

    def money(m: re.Match[str]) -> str:
        unit = m.group().strip()
        return {"k": " nghìn", "K": " nghìn", "tr": " triệu"}.get(unit, " đồng")

    def document(m: re.Match[str]) -> str:
        serial, year, code = m.groups()
        return f"{num(serial)} trên {read_number(int(year), odd)} trên {code}"

    def number(m: re.Match[str]) -> str:
        whole, fraction = m.group(1), m.group(2)
        if "." in whole or (fraction is None and whole.count(",") >= 2):
            whole = re.sub(r"[.,]", "", whole)
        if fraction is not None:
            return read_decimal(whole, fraction, odd)
        return num(whole)

    return [
        (_ABBREV_RE, lambda m: f" {ABBREVIATIONS[m.group(1)]} "),
        (_DOTTED_RE, lambda m: f" {DOTTED[m.group(1)]} "),
        (_DOCUMENT_RE, document),
        (_DATE_RANGE_RE, date_range),
        (_DATE_RE, date),
        (_ISO_DATE_RE, iso_date),
        (_MONTH_YEAR_RE, month_year),
        (_DAY_MONTH_RE, day_month),
        (_CLOCK_RE, clock),
        (_HOUR_RE, hour),
        (_RANGE_AFTER_MARK_RE, lambda m: " đến "),
        (_PHONE_AFTER_RE, phone_after),
        (_PHONE_RE, phone),
        (_ORDINAL_RE, ordinal),
        (_ROMAN_RE, roman),
        (_NEGATIVE_RE, lambda m: "âm "),
        (_MONEY_RE, money),
        (_UNIT_RE, lambda m: " " + UNITS[m.group(1)]),
        (_NUM_RANGE_RE, lambda m: " đến "),
        (_DOT_DECIMAL_RE, lambda m: f"{num(m.group(1))} chấm {num(m.group(2))}"),
        (_NUMBER_RE, lambda m: f" {number(m)} "),
        (_PER_RE, lambda m: " một "),
    ]


_RULES: dict[str, list[Rule]] = {}
_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'", "\u00a0": " "})


def _tidy_lines(text: str) -> str:
    """One line per sentence or heading; a heading without punctuation gets a pause."""
    lines = [
        re.sub(r"^\s*(?:[-*•+●▪◦]|\d{1,2}[.)])\s+", "", raw).strip() for raw in text.splitlines()
    ]
    lines = [line for line in lines if line]
    return "\n".join(
        line if i == len(lines) - 1 or line[-1] in ".!?:;,…" else line + "."
        for i, line in enumerate(lines)
    )


def normalise(text: str, odd: Odd = "linh") -> str:
    """Expand numbers, dates, times, money, units and abbreviations to spoken words.

    ``odd`` is the word for a zero tens digit: "linh" (northern, the default; 105 →
    "một trăm linh năm") or "lẻ" (southern). The result keeps the text's punctuation,
    which gives the engine its pauses.
    """
    text = unicodedata.normalize("NFC", text).translate(_QUOTES)
    text = _tidy_lines(text)
    if odd not in _RULES:
        _RULES[odd] = _rules(odd)
    for pattern, replace in _RULES[odd]:
        text = pattern.sub(replace, text)
    text = text.replace(_MARK, "").replace("&", " và ")
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" +([.,;:!?)\]])", r"\1", text)
    text = re.sub(r"([(\[]) +", r"\1", text)
    return "\n".join(line.strip() for line in text.splitlines()).strip()
