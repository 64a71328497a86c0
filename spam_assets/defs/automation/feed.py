"""The ingestion schedule: each day, the next N unseen rows of a large labelled source become a batch.

The schedule only decides; a small job does the work (reading a large
source takes longer than a schedule tick should, and a run has logs and
failure alerts). The job writes the rows into the inbox atomically, and the
inbox sensor ingests them: one intake path for every source.
"""

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from spam_assets.defs.automation.settings import (
    FEED_FORMAT_ENV,
    FEED_ROWS_ENV,
    FEED_SOURCE_ENV,
    env,
    env_number,
    feed_cron,
    inbox_dir,
)
from spam_assets.defs.run_tags import TRIGGER_TAG
from spam_assets.defs.resources import PlatformStore
from spam_assets.loaders import SourceSpec
from spam_assets.loaders.feed import Feed, write_jsonl


class FeedConfig(dg.Config):
    source: str
    rows: int = 100
    format: str = "auto"
    seed: int = 0
    source_name: str | None = None  # the rows' source name (loaders.source_names); unset: the format's default


@dg.op(description="Write the feed's next unseen rows into the inbox as feed-<UTC time>.jsonl.")
def pull_feed_batch(context: dg.OpExecutionContext, config: FeedConfig, store: PlatformStore) -> None:
    source = Path(config.source).expanduser()
    # One state per source file: pointing the feed elsewhere starts a new sequence.
    state = store.paths.feeds / f"{source.stem}-{hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:8]}"
    feed = Feed(source, state, SourceSpec(format=config.format, source=config.source_name), seed=config.seed)
    rows = feed.next(config.rows)
    if rows is None:
        context.log.warning(f"feed {source} is exhausted: every row has been delivered (state in {state})")
        return
    target = inbox_dir(store.home) / f"feed-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}.jsonl"
    write_jsonl(rows, target)  # temp dotfile + rename: the inbox never sees half of it
    context.log.info(f"wrote {len(rows)} rows from {source} to {target}; {feed.remaining()} left")


@dg.job(description="Take the next batch from $SPAM_FEED_SOURCE into the inbox.", tags={TRIGGER_TAG: "feed"})
def feed_job():
    pull_feed_batch()


def _feed_request() -> dg.RunRequest | dg.SkipReason:
    source = env(FEED_SOURCE_ENV).strip()
    if not source:
        return dg.SkipReason(
            f"no feed configured: set {FEED_SOURCE_ENV}=/path/to/a/labelled/file (any format the loaders read; "
            f"{FEED_ROWS_ENV}=rows per batch, default 100; {FEED_FORMAT_ENV}=auto|sms|csv|tsv|jsonl|email|mbox) "
            "and restart the code location"
        )
    if not Path(source).expanduser().exists():
        return dg.SkipReason(f"{FEED_SOURCE_ENV}={source} does not exist")
    config = {
        "source": source,
        "rows": int(env_number(FEED_ROWS_ENV, 100)),
        "format": env(FEED_FORMAT_ENV, "auto"),
    }
    return dg.RunRequest(run_config={"ops": {"pull_feed_batch": {"config": config}}})


_cron, _timezone = feed_cron()


@dg.schedule(
    name="daily_feed",
    cron_schedule=_cron,
    execution_timezone=_timezone,
    target=feed_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=f"Daily ({_cron} {_timezone}; $SPAM_FEED_CRON, $SPAM_FEED_TIMEZONE): next rows of $SPAM_FEED_SOURCE.",
)
def daily_feed(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    return _feed_request()
