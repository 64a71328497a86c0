"""The feedback sensor: users' reports become labelled raw_sample batches (source `feedback`), exactly once.

A tick reads what the server's feedback files gained since its cursor,
applies the noise guards (spam_assets.feedback_labels), appends the reports
it holds to <home>/review/held.jsonl (the feedback_review asset turns them
into a table and a file to relabel), and once at least $SPAM_FEEDBACK_MIN_BATCH
messages are ready to train on, stages them as ONE batch through intake,
the path every batch takes: content-hashed, checked by raw_sample's checks,
then joined to the corpus by the same automation as an inbox file.

The cursor (JSON, kept by Dagster) holds per-file byte offsets (see
feedback_labels.read_reports for why offsets and not the newest report id),
the reports screened but not yet in a batch (they wait for enough company,
and for later reports on the same message to vote), each reporter's count
for the cap, and the ids of the feedback batches staged.

Exactly once, across a crash between staging and the cursor's save: the
batch store is the ledger. A tick first looks for feedback batches the
cursor does not know (staged by a tick whose cursor was lost); their reports
are taken, so re-reading them from the old offsets trains nothing twice,
and their partition and run are requested again (run key `feedback:<batch>`,
which the daemon launches once). When nothing new arrived meanwhile the tick
recomputes the very same rows: same bytes, same batch id, same partition.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from spam_assets import feedback_labels as fl
from spam_assets.batches import BatchStore
from spam_assets.defs.automation.inbox import FAILED_RUN, ingest_batch_job
from spam_assets.defs.automation.settings import env_number
from spam_assets.defs.keys import FEEDBACK_REVIEW
from spam_assets.defs.partitions import batch_partitions
from spam_assets.defs.resources import ModelRegistry, PlatformStore
from spam_assets.defs.run_tags import TRIGGER_TAG
from spam_assets.disk import stored_model_bytes
from spam_assets.intake import disk_problem, registry_problem, stage
from spam_assets.loaders import BatchFormatError, SourceSpec, source_names

FEEDBACK_TRIGGER = "feedback"  # TRIGGER_TAG of the raw_sample runs of feedback batches
INTERVAL_ENV = "SPAM_FEEDBACK_INTERVAL_SECONDS"
MIN_BATCH_ENV, CAP_ENV = "SPAM_FEEDBACK_MIN_BATCH", "SPAM_FEEDBACK_CAP_PER_DAY"
CONFIDENT_SPAM_ENV, CONFIDENT_HAM_ENV = "SPAM_FEEDBACK_CONFIDENT_SPAM", "SPAM_FEEDBACK_CONFIDENT_HAM"
MAX_LOGGED = 20  # bad lines named per tick in the log; the rest are counted
MAX_RUNS = 3  # raw_sample runs a feedback batch gets: a batch that keeps failing needs a person

feedback_review_job = dg.define_asset_job(
    "feedback_review_job",
    selection=dg.AssetSelection.assets(FEEDBACK_REVIEW),
    description="Refresh the table and the file of held feedback reports.",
)


def rules_from_env() -> fl.FeedbackRules:
    defaults = fl.FeedbackRules()
    return fl.FeedbackRules(
        min_batch=int(env_number(MIN_BATCH_ENV, defaults.min_batch)),
        cap_per_day=int(env_number(CAP_ENV, defaults.cap_per_day)),
        confident_spam=env_number(CONFIDENT_SPAM_ENV, defaults.confident_spam),
        confident_ham=env_number(CONFIDENT_HAM_ENV, defaults.confident_ham),
    )


@dataclasses.dataclass
class FeedbackCursor:
    offsets: dict[str, list[int]] = dataclasses.field(default_factory=dict)  # file -> [bytes, lines] read
    waiting: list[dict] = dataclasses.field(default_factory=list)  # screened, not yet in a batch
    counts: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)  # UTC day -> reporter -> reports
    staged: list[str] = dataclasses.field(default_factory=list)  # feedback batches staged, oldest first
    totals: dict[str, int] = dataclasses.field(default_factory=dict)  # read, bad, held, skipped, trained

    @classmethod
    def load(cls, raw: str | None) -> FeedbackCursor:
        return cls(**json.loads(raw)) if raw else cls()

    def dump(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, ensure_ascii=False)

    def add(self, **counts: int) -> None:
        for name, n in counts.items():
            self.totals[name] = self.totals.get(name, 0) + n


def feedback_batches(batches: BatchStore) -> list[str]:
    """Batches this sensor staged, oldest first (recognised by their name)."""
    return [b for b in batches.ids() if fl.BATCH_NAME.fullmatch(batches.meta(b).get("original_name", ""))]


def _run_request(context: dg.SensorEvaluationContext, batch_id: str, rows: int | None = None) -> dg.RunRequest | None:
    """A raw_sample run for a feedback batch, unless one is in flight or done, or MAX_RUNS have failed."""
    runs = list(context.instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": batch_id}), limit=MAX_RUNS))
    if runs and runs[0].status not in FAILED_RUN:
        return None  # queued, running or done
    if len(runs) >= MAX_RUNS:
        context.log.warning(
            f"feedback: batch {batch_id} failed raw_sample {len(runs)} times (last run {runs[0].run_id}); "
            "not requested again: see that run, then materialise the partition by hand"
        )
        return None
    return dg.RunRequest(
        job_name=ingest_batch_job.name,
        partition_key=batch_id,
        run_key=f"feedback:{batch_id}:{len(runs)}",  # the daemon launches a run key once; a retry gets a new one
        tags={TRIGGER_TAG: FEEDBACK_TRIGGER} | ({"spam/feedback_rows": str(rows)} if rows else {}),
    )


@dg.sensor(
    name="feedback_sensor",
    jobs=[ingest_batch_job, feedback_review_job],
    minimum_interval_seconds=max(1, int(env_number(INTERVAL_ENV, 300))),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Turns users' reports (<home>/predictions/feedback) into labelled raw_sample batches of at least "
        "$SPAM_FEEDBACK_MIN_BATCH messages (default 50), exactly once, after the noise guards: a cap per "
        "reporter per day, confident verdicts contradicted and ties held for review (feedback_review)."
    ),
)
def feedback_sensor(context: dg.SensorEvaluationContext, store: PlatformStore, registry: ModelRegistry) -> dg.SensorResult:
    rules, batches = rules_from_env(), store.batches()
    log_dir, ledger = store.paths.predictions, fl.review_folder(store.paths.home) / fl.HELD_LEDGER
    cursor = FeedbackCursor.load(context.cursor)
    requests: list[dg.RunRequest] = []
    to_add: list[str] = []

    # Batches staged by a tick whose cursor was lost: their reports are taken. Any batch not judged yet
    # (that tick's partition and run were lost too, or its run failed) gets its partition and a run.
    taken: set[str] = set()
    for batch_id in feedback_batches(batches):
        if batch_id not in cursor.staged:
            ids = fl.report_ids_in(batches.received_path(batch_id))
            taken |= ids
            cursor.staged.append(batch_id)
            context.log.warning(f"feedback: batch {batch_id} was staged by a tick whose cursor was lost; {len(ids)} reports taken")
        if batches.validation(batch_id) is None:
            if not context.instance.has_dynamic_partition(batch_partitions.name, batch_id):
                to_add.append(batch_id)
            if (request := _run_request(context, batch_id)) is not None:
                requests.append(request)

    read = fl.read_reports(log_dir, cursor.offsets)
    for bad in read.bad[:MAX_LOGGED]:
        context.log.warning(f"feedback: skipped line {bad}")
    if len(read.bad) > MAX_LOGGED:
        context.log.warning(f"feedback: {len(read.bad) - MAX_LOGGED} more bad lines skipped")
    new = [r for r in read.reports if r["report_id"] not in taken]
    waiting = [r for r in cursor.waiting if r["report_id"] not in taken]
    fl.fill_texts(new, log_dir)
    screened = fl.screen(new, cursor.counts, rules)
    candidates = waiting + screened.passed
    resolved = fl.resolve(candidates)
    held, skipped = list(screened.held), list(screened.skipped)
    cursor.add(read=len(new), bad=len(read.bad))

    staged_now = None
    if len(resolved.rows) >= rules.min_batch:
        if (problem := registry_problem(registry.uri())) is None:
            data = fl.batch_bytes(resolved.rows)
            problem = disk_problem(store.home, len(data), stored_model_bytes(registry.uri()))
        if problem is None:
            try:
                staged_now = _stage(data, batches)
            except (OSError, BatchFormatError) as error:  # e.g. the disk filled meanwhile: nothing was staged
                problem = f"staging failed: {error}"
        if staged_now is not None:
            held += resolved.held
            skipped += resolved.skipped
            cursor.waiting = []
            cursor.staged += [] if staged_now in cursor.staged else [staged_now]
            cursor.add(trained=sum(len(r["report_ids"]) for r in resolved.rows))
            if not context.instance.has_dynamic_partition(batch_partitions.name, staged_now):
                to_add.append(staged_now)
            if (request := _run_request(context, staged_now, len(resolved.rows))) is not None:
                requests.append(request)
            context.log.info(
                f"feedback: staged batch {staged_now}: {len(resolved.rows)} messages from "
                f"{sum(len(r['report_ids']) for r in resolved.rows)} reports; {len(resolved.held)} held (ties), "
                f"{len(resolved.skipped)} outvoted"
            )
        else:
            cursor.waiting = candidates
            context.log.warning(
                f"feedback: {len(resolved.rows)} messages ready, not staged: {problem}; "
                "they wait, and are staged on a later tick once this is fixed"
            )
    else:
        cursor.waiting = candidates

    if held:
        ledger.parent.mkdir(parents=True, exist_ok=True)
        with ledger.open("a", encoding="utf-8") as out:  # a crash mid-line: read_held skips that line
            out.write("".join(fl.held_line(r) for r in held))
        cursor.add(held=len(held))
        requests.append(dg.RunRequest(job_name=feedback_review_job.name, run_key=f"feedback_review:{cursor.totals['held']}"))
    for r in skipped:
        context.log.info(f"feedback: skipped report {r['report_id']} ({r['where']}): {r['skipped_because']}")
    cursor.add(skipped=len(skipped))
    cursor.offsets, cursor.counts = read.offsets, fl.prune_counts(cursor.counts, datetime.now(UTC).date())

    summary = (
        f"{len(new)} new reports ({len(read.bad)} bad lines skipped), {len(held)} held, {len(skipped)} skipped; "
        f"{len(fl.resolve(cursor.waiting).rows)} messages waiting for a batch of {rules.min_batch}"
    )
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[batch_partitions.build_add_request(to_add)] if to_add else [],
        cursor=cursor.dump(),
        skip_reason=None if requests else summary,
    )


def _stage(data: bytes, batches: BatchStore) -> str:
    """Stage the batch bytes through intake, as every batch is staged (same bytes: same batch id)."""
    name = fl.batch_name(data)
    batches.root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".feedback-", dir=batches.root.parent) as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        return stage(path, batches, SourceSpec(format="jsonl", source=source_names.FEEDBACK), name)
