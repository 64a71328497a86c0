"""The traffic sensor: each prediction-log segment the server publishes re-compacts the hours it can hold.

A tick lists the published segments in <home>/predictions; those not seen
before are new. Each new segment can hold records from when it was opened
(the UUIDv7 its name starts with) to when it was last written (its mtime),
so it touches one hour, or two across an hour's turn. One run is requested
per touched hour, whatever number of new segments touch it; the run key
names the hour and the new segments, so a tick evaluated twice launches
nothing twice, and a tick with nothing new requests nothing. The hour still
filling is re-compacted each time one of its segments closes (every
--log-segment-seconds, 5 minutes, per replica).

The cursor (JSON, kept by Dagster across daemon restarts) holds the ids of
the segments seen that were written within LOOKBACK of the tick, and the
tick's time: a segment written since LOOKBACK before the previous tick and
not seen is new, so a sensor stopped for a week catches up on its return.
A first tick takes the last LOOKBACK of the log; older hours are a backfill
(select the partitions of `traffic` in the UI and materialise them).
"""

import dataclasses
import datetime as dt
import hashlib
import json
import time

import dagster as dg

from spam_assets.defs.automation.settings import TRAFFIC_START_ENV, traffic_interval
from spam_assets.defs.keys import TRAFFIC, TRAFFIC_DRIFT
from spam_assets.defs.partitions import traffic_hours
from spam_assets.defs.resources import PlatformStore
from spam_assets.defs.run_tags import TRIGGER_TAG
from spam_assets.traffic.prediction_files import NAME
from spam_assets.traffic_tables import Segment, published_segments

LOOKBACK_S = 24 * 3600.0
TRAFFIC_TRIGGER = "traffic"

compact_traffic_job = dg.define_asset_job(
    "compact_traffic",
    selection=dg.AssetSelection.assets(TRAFFIC, TRAFFIC_DRIFT),
    description=(
        "Compact one hour of the prediction log into its traffic table (one traffic partition), "
        "then judge the hour against the champion's reference (traffic_drift)."
    ),
)


@dataclasses.dataclass
class TrafficCursor:
    seen: list[str] = dataclasses.field(default_factory=list)  # segment ids written within LOOKBACK of `tick`
    tick: float | None = None  # time.time() of the previous tick

    @classmethod
    def load(cls, raw: str | None) -> "TrafficCursor":
        return cls(**json.loads(raw)) if raw else cls()

    def dump(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def segment_id(segment: Segment) -> str:
    """The UUIDv7 of a segment's name: unique across replicas, shorter in the cursor than the name."""
    return NAME.match(segment.name)["segment"]


def plan_runs(
    listing: list[Segment], cursor: TrafficCursor, now: float, first: dt.datetime, end: dt.datetime
) -> tuple[list[dg.RunRequest], TrafficCursor, list[str]]:
    """(one run request per hour new segments touch within [first, end), the next cursor, notes for the log)."""
    horizon = (cursor.tick if cursor.tick is not None else now) - LOOKBACK_S
    seen = set(cursor.seen)
    new = [s for s in listing if segment_id(s) not in seen and s.modified.timestamp() >= horizon]
    touched: dict[dt.datetime, list[str]] = {}
    for segment in new:
        for hour in segment.hours():
            touched.setdefault(hour, []).append(segment_id(segment))
    requests, notes = [], []
    for hour, ids in sorted(touched.items()):
        if hour >= end:  # only by the clock slack, or a writer's clock ahead: its next segment brings the hour
            continue
        if hour < first:
            notes.append(
                f"{len(ids)} new segments hold {hour:%Y-%m-%d %H:00} UTC, before {TRAFFIC_START_ENV}: not compacted"
            )
            continue
        key = traffic_hours.get_partition_key_for_timestamp(hour.timestamp())
        digest = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]
        requests.append(
            dg.RunRequest(partition_key=key, run_key=f"traffic:{key}:{digest}", tags={TRIGGER_TAG: TRAFFIC_TRIGGER})
        )
    recent = sorted(segment_id(s) for s in listing if s.modified.timestamp() >= now - LOOKBACK_S)
    return requests, TrafficCursor(seen=recent, tick=now), notes


@dg.sensor(
    name="traffic_sensor",
    target=compact_traffic_job,
    minimum_interval_seconds=traffic_interval(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Re-compacts each hour of the prediction log ($SPAM_HOME/predictions) into its traffic table "
        "when a segment that can hold that hour is published: one run per hour per new set of segments."
    ),
)
def traffic_sensor(context: dg.SensorEvaluationContext, store: PlatformStore) -> dg.SensorResult | dg.SkipReason:
    log_dir = store.paths.predictions
    if not log_dir.is_dir():
        return dg.SkipReason(
            f"no prediction log at {log_dir}: this sensor watches predictions/ under the platform home ($SPAM_HOME). "
            f"Start spam-serve with the same SPAM_HOME (its default log), or point it here with "
            f"--prediction-log {log_dir} (env SPAM_SERVING_PREDICTION_LOG)."
        )
    now = time.time()
    first = traffic_hours.get_first_partition_window()
    last = traffic_hours.get_last_partition_window()
    if first is None or last is None:
        return dg.SkipReason(f"no traffic partition yet: {TRAFFIC_START_ENV} is in the future")
    cursor = TrafficCursor.load(context.cursor)
    requests, cursor, notes = plan_runs(published_segments(log_dir), cursor, now, first.start, last.end)
    for note in notes:
        context.log.info(f"traffic: {note}")
    skip = None if requests else f"no new published segment in {log_dir} ({len(cursor.seen)} seen in the last day)"
    return dg.SensorResult(run_requests=requests, cursor=cursor.dump(), skip_reason=skip)
