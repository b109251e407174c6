"""The one local time zone: Asia/Ho_Chi_Minh. Stored times are UTC; people read these.

Vietnam has no daylight saving, so a host without tzdata falls back to a fixed UTC+7.
"""

from __future__ import annotations

from datetime import timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

try:
    LOCAL_TZ: timezone | ZoneInfo = ZoneInfo("Asia/Ho_Chi_Minh")
except ZoneInfoNotFoundError:  # no tzdata on the host
    LOCAL_TZ = timezone(timedelta(hours=7), "ICT")
