"""Environment knobs for the automation, with defaults that make a demo loop turn in about a minute.

Intervals and crons are read when the code location loads (Dagster needs them
in the definitions); paths and URLs are read at each evaluation.
"""

from __future__ import annotations

import os
from pathlib import Path

from spam_assets.settings import paths

INBOX_ENV = "SPAM_INBOX"
SENSOR_INTERVAL_ENV = "SPAM_SENSOR_INTERVAL_SECONDS"
NOTIFY_INTERVAL_ENV = "SPAM_NOTIFY_INTERVAL_SECONDS"
SETTLE_ENV = "SPAM_INBOX_SETTLE_SECONDS"
RETRAIN_CRON_ENV, RETRAIN_TZ_ENV = "SPAM_RETRAIN_CRON", "SPAM_RETRAIN_TIMEZONE"
FEED_SOURCE_ENV, FEED_ROWS_ENV, FEED_FORMAT_ENV = "SPAM_FEED_SOURCE", "SPAM_FEED_ROWS", "SPAM_FEED_FORMAT"
FEED_CRON_ENV, FEED_TZ_ENV = "SPAM_FEED_CRON", "SPAM_FEED_TIMEZONE"
WEBHOOK_ENV, WEBHOOK_TIMEOUT_ENV = "SPAM_WEBHOOK_URL", "SPAM_WEBHOOK_TIMEOUT_SECONDS"



def env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


def sensor_interval() -> int:
    """Minimum seconds between ticks of the sensors on the drop-to-champion path (Dagster's default is 30).

    dagster-daemon's sensor and automation loops come round every 5 s, and a
    sensor ticks on a loop only when its interval has passed. With an
    interval of exactly 5, a loop that comes round a few milliseconds early
    skips the tick and the sensor waits 10 s (measured: gaps alternated 5 and
    10 s); 4 ticks on every loop, so every 5 s.
    """
    return max(1, int(env_number(SENSOR_INTERVAL_ENV, 4)))


def notify_interval() -> int:
    """Minimum seconds between ticks of the notification sensors.

    Nothing waits on a notification, and every tick of every sensor costs
    the daemon and the code server CPU that the loop's own runs need (an
    idle daemon took 28% of a core with every sensor at 4 s, 18% at 10 s).
    """
    return max(1, int(env_number(NOTIFY_INTERVAL_ENV, 15)))


def settle_seconds() -> float:
    """An inbox file untouched for this long is complete (else: unchanged across two ticks)."""
    return env_number(SETTLE_ENV, 3)


def retrain_cron() -> tuple[str, str]:
    return os.environ.get(RETRAIN_CRON_ENV, "0 3 * * 1"), os.environ.get(RETRAIN_TZ_ENV, "UTC")  # Mondays 03:00


def feed_cron() -> tuple[str, str]:
    return os.environ.get(FEED_CRON_ENV, "0 6 * * *"), os.environ.get(FEED_TZ_ENV, "UTC")  # daily 06:00


def inbox_dir(home: Path | str | None = None) -> Path:
    """$SPAM_INBOX, else <home>/inbox."""
    raw = os.environ.get(INBOX_ENV)
    return Path(raw).expanduser().resolve() if raw else paths(home).inbox
