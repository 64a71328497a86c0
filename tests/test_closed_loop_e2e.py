"""The closed loop, end to end: traffic switches from SMS to e-mail, and the platform learns it with no human action.

With the real dagster-daemon and a real spam-serve on a temp home, default
intervals:

1. the champion is trained on the first 4,500 SMS messages (`up --no-ui`);
2. the server answers the remaining SMS messages, then, from a known moment,
   SpamAssassin e-mail; users report the true label of 10% of the messages
   they were served, 5% of those reports flipped at random;
3. the platform must, from the traffic alone, call drift on the hour that
   holds the e-mail (traffic_drift) and estimate the drop in F1, turn the
   feedback into labelled batches, retrain, promote, and the server must
   swap to the new champion.

The times (switch -> alarm -> new champion serving) and the realised spam F1
on the replayed e-mail before and after are printed (-s) and written to
<tmp>/closed-loop.json. Run with: pytest -m slow tests/test_closed_loop_e2e.py -s
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest

from serving.generated.spam.v1 import classifier_pb2 as pb
from serving.generated.spam.v1 import classifier_pb2_grpc as pb_grpc
from tests.datasets import sms_or_skip, spamassassin_or_skip
from tests.serving_fixtures import free_port
from tests.test_loop_e2e import BOOTSTRAP_ROWS, Platform, _materializations, _meta, _wait_for
from tests.test_notifications import recording_server

pytestmark = [pytest.mark.slow, pytest.mark.datasets]

MAIL_MESSAGES = 2500  # e-mails served after the switch: 10% reported gives a few hundred labels
FEEDBACK_SHARE = 0.10
FLIPPED_SHARE = 0.05
REPORTERS = 40  # the feedback cap is per reporter per day
MAX_TEXT = 60 * 1024  # bytes: the server refuses a text over 64 KiB, so a client sends no longer one
REQUEST_BYTES = 256 * 1024  # texts per stream request up to this many bytes (the server takes 1 MiB)
LOOP_TIMEOUT = 1800  # seconds from the switch to the new champion serving; generous on a loaded 2-core machine


def _sms(path) -> list[tuple[str, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        label, _, text = line.partition("\t")
        rows.append((text, label))
    return rows


def _mail(archive, n: int) -> list[tuple[str, str]]:
    """n SpamAssassin messages as the platform's own e-mail reader gives them (the text a client would send)."""
    from spam_assets.loaders import SourceSpec, read_batch

    frame = read_batch(archive, SourceSpec(format="email"))
    rows = [(text, label) for text, label in zip(frame["text"], frame["label"], strict=True) if len(text.encode()) <= MAX_TEXT]
    return random.Random(0).sample(rows, n)


def _spam_f1(truth: list[str], predicted: list[str]) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(np.array(truth) == "spam", np.array(predicted) == "spam"))


class Server:
    """spam-serve on a free port, following the platform home's champion, logging to its prediction log."""

    def __init__(self, platform: Platform, root, extra_args: list[str] = ()):
        from spam_assets.settings import tracking_uri

        self.port = free_port()
        self.log = root / "serve.log"
        env = {**platform.env, "SPAM_SERVING_TRACKING_URI": tracking_uri(platform.home), "MLFLOW_DISABLE_TELEMETRY": "true"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serving.server", "--host", "127.0.0.1", "--port", str(self.port), *extra_args],
            env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = pb_grpc.ClassifierStub(self.channel)

    def version(self) -> str | None:
        try:
            return self.stub.GetChampion(pb.GetChampionRequest(), timeout=5).version or None
        except grpc.RpcError:
            return None

    def classify(self, rows: list[tuple[str, str]], prefix: str) -> list[pb.Verdict]:
        requests, batch, size = [], [], 0
        for j, (text, _) in enumerate(rows):
            if batch and size + len(text.encode()) > REQUEST_BYTES:
                requests.append(pb.ClassifyStreamRequest(messages=batch))
                batch, size = [], 0
            batch.append(pb.Message(id=f"{prefix}{j}", text=text))
            size += len(text.encode())
        requests.append(pb.ClassifyStreamRequest(messages=batch))
        results = [r for response in self.stub.ClassifyStream(iter(requests), timeout=600) for r in response.results]
        refused = [r.error.message for r in results if r.WhichOneof("outcome") != "verdict"]
        assert not refused and len(results) == len(rows), refused[:3]
        return [r.verdict for r in results]

    def stop(self) -> None:
        self.channel.close()
        with_group = lambda sig: os.killpg(self.process.pid, sig)  # noqa: E731
        try:
            with_group(signal.SIGTERM)
            self.process.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                with_group(signal.SIGKILL)
            except ProcessLookupError:
                pass


def _report(server: Server, served: list[tuple[pb.Verdict, str]], rng: random.Random) -> dict:
    """Users report the true label of FEEDBACK_SHARE of what they were served; FLIPPED_SHARE of reports are wrong."""
    reported = flipped = 0
    for i, (verdict, truth) in enumerate(served):
        if rng.random() >= FEEDBACK_SHARE:
            continue
        label = truth
        if rng.random() < FLIPPED_SHARE:
            label, flipped = ("ham" if truth == "spam" else "spam"), flipped + 1
        server.stub.Report(
            pb.ReportRequest(verdict_id=verdict.verdict_id, label=label, reporter=f"user-{i % REPORTERS}"), timeout=30
        )
        reported += 1
    return {"reported": reported, "flipped": flipped}


def test_traffic_switch_to_email_is_detected_learnt_and_served(tmp_path, monkeypatch):
    from spam_assets.model.registry import Registry
    from spam_assets.settings import tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    sms_rows = _sms(sms_or_skip())
    mail_rows = _mail(spamassassin_or_skip(), MAIL_MESSAGES)
    first = tmp_path / "sms-first.txt"
    first.write_text("".join(f"{label}\t{text}\n" for text, label in sms_rows[:BOOTSTRAP_ROWS]), encoding="utf-8")
    timeline: dict[str, object] = {}
    rng = random.Random(1)

    with recording_server() as (url, received):
        platform = Platform(tmp_path, url)
        platform.bootstrap(first)
        instance = platform.instance()
        registry = Registry(tracking_uri(platform.home))
        before = str(registry.champion().version)
        server = Server(platform, tmp_path)
        try:
            platform.start_daemon()
            _wait_for("the server to serve the champion", lambda: server.version() == before, platform, 120)

            # SMS traffic like the champion's training data, then e-mail from a known moment.
            sms_served = server.classify(sms_rows[BOOTSTRAP_ROWS:], "sms-")
            switch = time.time()
            mail_served = server.classify(mail_rows, "mail-")
            truth = [label for _, label in mail_rows]
            f1_before = _spam_f1(truth, [v.label for v in mail_served])
            timeline["feedback"] = _report(
                server, [*zip(sms_served, (label for _, label in sms_rows[BOOTSTRAP_ROWS:])), *zip(mail_served, truth)], rng
            )
            timeline["f1_on_email_before"] = round(f1_before, 3)

            # Watched together: the traffic alarm (from the traffic alone), the feedback batches, the new champion
            # serving. Each is timed from the switch when first seen.
            seen: dict[str, object] = {}

            def watch():
                verdicts = _materializations(instance, "traffic_drift", switch - 3600)
                if "alarm" not in seen and (alarms := [r for r in verdicts if _meta(r)["drift"]]):
                    seen["alarm"], seen["alarm_at"] = alarms[0], time.time()
                runs = instance.get_runs(limit=100)
                if "feedback_batch_at" not in seen and any(r.tags.get("spam/trigger") == "feedback" for r in runs):
                    seen["feedback_batch_at"] = time.time()
                champion = str(registry.champion().version)
                if "swap_at" not in seen and champion != before and server.version() == champion:
                    seen["swap_at"], seen["new_champion"] = time.time(), champion
                return {"alarm", "swap_at", "feedback_batch_at"} <= set(seen)

            _wait_for("a traffic alarm, a feedback batch and a new champion serving", watch, platform, LOOP_TIMEOUT)
            alarm = seen["alarm"]
            verdict, estimates = _meta(alarm)["verdict"], _meta(alarm)["estimates"]
            assert verdict["drift"] is True and verdict["decay"] is True, verdict  # decay: the feedback labels say so
            timeline.update(
                switch_to_traffic_alarm_s=round(seen["alarm_at"] - switch, 1),
                switch_to_feedback_batch_s=round(seen["feedback_batch_at"] - switch, 1),
                switch_to_new_champion_serving_s=round(seen["swap_at"] - switch, 1),
                traffic_alarm_hour=verdict["hour"],
                traffic_alarm_reasons=verdict["reasons"],
                realised_f1_from_feedback_at_alarm=estimates["realised"]["f1"],
                estimated_f1_at_alarm_cbpe=estimates["cbpe"]["f1"],
                estimated_true_spam_share_at_alarm_em=estimates["em_share"],
                true_spam_share_of_email=round(truth.count("spam") / len(truth), 3),
            )
            retrains = [r for r in instance.get_runs(limit=200) if "spam/retrain_reason" in r.tags]
            timeline["retrain_triggers"] = sorted({r.tags["spam/trigger"] for r in retrains})
            after = seen["new_champion"]

            # The same e-mails, answered again by the new champion.
            f1_after = _spam_f1(truth, [v.label for v in server.classify(mail_rows, "again-")])
            timeline.update(new_champion=after, champion_before=before, f1_on_email_after=round(f1_after, 3))
            timeline["load_average_1m"] = os.getloadavg()[0]
            assert f1_after > f1_before + 0.05, timeline
        finally:
            server.stop()
            platform.stop()
            instance.dispose()

    (tmp_path / "closed-loop.json").write_text(json.dumps(timeline, indent=2))
    print("\nclosed loop:", json.dumps(timeline, indent=2))
