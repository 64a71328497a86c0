"""Environment knobs for the automation, with defaults that make a demo loop turn in about a minute.

Intervals and crons are part of the definitions themselves (a sensor's
minimum interval, a schedule's cron): Dagster has no way to defer them to
run time, so they are read when the code location loads its defs folder.
The decay floor and the webhook reach the runs through resources
(defs/resources.py); paths, the feed and the webhook URL are read at each
evaluation. Every read goes through `dg.EnvVar`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import dagster as dg

from spam_assets.settings import paths

INBOX_ENV = "SPAM_INBOX"
SENSOR_INTERVAL_ENV = "SPAM_SENSOR_INTERVAL_SECONDS"
NOTIFY_INTERVAL_ENV = "SPAM_NOTIFY_INTERVAL_SECONDS"
SETTLE_ENV = "SPAM_INBOX_SETTLE_SECONDS"
RETRAIN_CRON_ENV, RETRAIN_TZ_ENV = "SPAM_RETRAIN_CRON", "SPAM_RETRAIN_TIMEZONE"
FEED_SOURCE_ENV, FEED_ROWS_ENV, FEED_FORMAT_ENV = "SPAM_FEED_SOURCE", "SPAM_FEED_ROWS", "SPAM_FEED_FORMAT"
FEED_CRON_ENV, FEED_TZ_ENV = "SPAM_FEED_CRON", "SPAM_FEED_TIMEZONE"
WEBHOOK_ENV, WEBHOOK_TIMEOUT_ENV = "SPAM_WEBHOOK_URL", "SPAM_WEBHOOK_TIMEOUT_SECONDS"
F1_FLOOR_ENV = "SPAM_F1_FLOOR"  # drift_statistics says `decay` below it (DecayPolicy)
# The operating point's targets (OperatingPointPolicy): ham false-positive rates of the spam and suspicious tiers.
TARGET_HAM_FPR_ENV, SUSPICIOUS_HAM_FPR_ENV = "SPAM_TARGET_HAM_FPR", "SPAM_SUSPICIOUS_HAM_FPR"
RETRY_BACKOFF_ENV = "SPAM_RETRY_BACKOFF_SECONDS"
TRAFFIC_INTERVAL_ENV = "SPAM_TRAFFIC_INTERVAL_SECONDS"
TRAFFIC_START_ENV = "SPAM_TRAFFIC_START"  # first hour of the traffic partitions, e.g. 2026-11-01-00:00
TRAFFIC_START = "2026-11-01-00:00"
# on | off: PromotionPolicy.adversarial_gate, the promotion gate on recall under obfuscation (decision.py)
ADVERSARIAL_GATE_ENV = "SPAM_ADVERSARIAL_GATE"
SOURCE_GATES_ENV = "SPAM_SOURCE_GATES"  # on | off: PromotionPolicy.source_gates, the per-source gates (decision.py)
ROLLOUT_INTERVAL_ENV = "SPAM_ROLLOUT_INTERVAL_SECONDS"
ROLLOUT_ENV = "SPAM_ROLLOUT"  # on | off: off promotes a winning challenger at once, as before the staged rollout
# The rollout's knobs (spam_assets/rollout.py RolloutRules), each SPAM_ROLLOUT_<NAME>, e.g. SPAM_ROLLOUT_CANARY_SHARE.
ROLLOUT_KNOBS = (
    "shadow_pairs", "shadow_min_seconds", "canary_share", "canary_pairs", "canary_min_seconds",
    "alpha", "max_precision_drop", "max_disagreement", "min_labelled_pairs", "watch_seconds",
)  # fmt: skip


def env(name: str, default: str = "") -> str:
    return dg.EnvVar(name).get_value(default) or default


def env_number(name: str, default: float) -> float:
    raw = env(name).strip()
    try:
        return float(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


def env_switch(name: str, default: bool) -> bool:
    """An on/off knob: on, off, true, false, 1 or 0; unset keeps `default`."""
    raw = env(name).strip().lower()
    if not raw:
        return default
    if raw not in ("on", "off", "true", "false", "1", "0"):
        raise ValueError(f"{name}={raw!r} is not on or off")
    return raw in ("on", "true", "1")


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


def traffic_interval() -> int:
    """Minimum seconds between ticks of the traffic sensor: a segment closes every few minutes per
    replica (--log-segment-seconds, 300), so a minute adds little delay and spares the daemon."""
    return max(1, int(env_number(TRAFFIC_INTERVAL_ENV, 60)))


def traffic_start() -> str:
    """The first hour of the traffic partitions (UTC, `YYYY-MM-DD-HH:MM`). Hours before it are not
    listed in the UI (an empty hour per hour since whenever) and not compacted."""
    raw = env(TRAFFIC_START_ENV, TRAFFIC_START).strip()
    for form in ("%Y-%m-%d-%H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(raw, form).strftime("%Y-%m-%d-%H:00")
        except ValueError:
            continue
    raise ValueError(f"{TRAFFIC_START_ENV}={raw!r} is not an hour like {TRAFFIC_START} (UTC) or a date like 2026-11-01")


def rollout_interval() -> int:
    """Minimum seconds between ticks of the rollout sensor: evidence arrives with log segments (every few
    minutes per replica) and feedback, and every stage lasts tens of minutes, so a minute is plenty."""
    return max(1, int(env_number(ROLLOUT_INTERVAL_ENV, 60)))


def rollout_settings() -> dict:
    """The staged rollout's knobs set in the environment ($SPAM_ROLLOUT=off, $SPAM_ROLLOUT_<KNOB>); unset ones keep
    RolloutRules' defaults."""
    out: dict = {}
    if env(ROLLOUT_ENV).strip():
        out["enabled"] = env_switch(ROLLOUT_ENV, True)
    for knob in ROLLOUT_KNOBS:
        name = f"{ROLLOUT_ENV}_{knob.upper()}"
        if env(name).strip():
            value = env_number(name, 0.0)
            out[knob] = int(value) if knob.endswith("pairs") else value
    return out


def retry_backoff_seconds() -> float:
    """How long after a training died its retry is requested: a full disk or a memory-hungry
    neighbour gets time to clear, and a retry never races the run monitor freeing the dead run's slot."""
    return env_number(RETRY_BACKOFF_ENV, 60)


def settle_seconds() -> float:
    """An inbox file untouched for this long is complete (else: unchanged across two ticks)."""
    return env_number(SETTLE_ENV, 3)


def retrain_cron() -> tuple[str, str]:
    return env(RETRAIN_CRON_ENV, "0 3 * * 1"), env(RETRAIN_TZ_ENV, "UTC")  # Mondays 03:00


def feed_cron() -> tuple[str, str]:
    return env(FEED_CRON_ENV, "0 6 * * *"), env(FEED_TZ_ENV, "UTC")  # daily 06:00


def inbox_dir(home: Path | str | None = None) -> Path:
    """$SPAM_INBOX, else <home>/inbox."""
    raw = env(INBOX_ENV)
    return Path(raw).expanduser().resolve() if raw else paths(home).inbox
