"""`spam-classify`: classify texts with a running `spam-serve`, and a small Python client.

    spam-classify "WINNER! claim your prize" "lunch tomorrow?"
    spam-classify --file messages.txt              # one message per line
    spam-classify < messages.jsonl                 # {"id": ..., "text": ...} per line
    spam-classify --target host:50051 --tls-ca ca.pem --file big.txt > verdicts.jsonl
    spam-classify --explain "WINNER! claim your prize"   # and the n-grams that moved each verdict
    spam-classify report VERDICT_ID spam --reporter alice --reason "phishing"
    spam-classify report --text "the message" ham  # a message without a verdict id

Messages go over one ClassifyStream call in batches (--batch-size); one JSON
line per message comes out, in input order: id, label, tier (ham,
suspicious or spam, by the model version's operating point),
spam_probability, model_version and verdict_id (the server's id of the
verdict, for `spam-classify report`), with --explain also `explanation`
(the n-grams that moved P(spam), with signed weights), or id and error. Exit status 0 when every message was
classified, 1 when some were rejected, 2 when the call failed.
The token comes from --token or $SPAM_SERVING_TOKEN.

`report` sends feedback (spam.v1.Classifier/Report) and prints one JSON
line: report_id and created (false: this reporter had reported it before).
Exit status 0 when stored (or already stored), 1 when the server refused it
(the reason on stderr), 2 when the call failed. To classify the single word
"report", put `--` before it.
"""

from __future__ import annotations

import argparse
import getpass
import itertools
import json
import os
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from serving.config import TOKEN_ENV
from serving.generated.spam.v1 import classifier_pb2 as pb
from serving.generated.spam.v1 import classifier_pb2_grpc as pb_grpc

DEFAULT_TARGET = os.environ.get("SPAM_SERVING_TARGET", "127.0.0.1:50051")
# The server's default per-request budget (--max-request-bytes), less room for framing.
MAX_REQUEST_BYTES = 1024 * 1024 - 4096
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def make_channel(target: str, tls_ca: Path | None = None, tls: bool = False) -> grpc.Channel:
    """A channel to `target`; TLS with `tls_ca` as the trusted root (or the system roots when `tls`)."""
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    if tls_ca is not None or tls:
        roots = Path(tls_ca).read_bytes() if tls_ca is not None else None
        return grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=roots), options=options)
    return grpc.insecure_channel(target, options=options)


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def stream_requests(
    messages: Iterable[tuple[str, str]], batch_size: int, max_bytes: int = MAX_REQUEST_BYTES, explain: bool = False
) -> Iterator[pb.ClassifyStreamRequest]:
    """Group (id, text) pairs into stream requests of at most batch_size messages and max_bytes serialized."""
    batch: list[pb.Message] = []
    size = 0
    for message_id, text in messages:
        message = pb.Message(id=message_id, text=text)
        grows = message.ByteSize() + 6  # the field's tag and length
        if batch and (len(batch) >= batch_size or size + grows > max_bytes):
            yield pb.ClassifyStreamRequest(messages=batch, explain=explain)
            batch, size = [], 0
        batch.append(message)
        size += grows
    if batch:
        yield pb.ClassifyStreamRequest(messages=batch, explain=explain)


# A server that is full or restarting says so with these; the call can be made again.
RETRYABLE = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"  # the server's hint (gRFC A6), in ms


@dataclass(frozen=True)
class Backoff:
    """Jittered exponential backoff, bounded: at most `attempts` tries in a row without progress.

    The defaults wait at most 0.2+0.4+0.8+1.6+3.2+5+5 = 16.2 s in all
    (half that on average: "full jitter"), or the server's pushback when longer.
    """

    attempts: int = 8
    base: float = 0.2
    cap: float = 5.0

    def delay(self, failures: int, pushback: float = 0.0) -> float:
        return max(pushback, random.uniform(0, min(self.cap, self.base * 2 ** (failures - 1))))


def _pushback_seconds(error: grpc.RpcError) -> float:
    for key, value in error.trailing_metadata() or ():
        if key == RETRY_PUSHBACK_KEY:
            try:
                return max(0.0, int(value) / 1000)
            except ValueError:
                return 0.0
    return 0.0


class _Resendable:
    """The messages of one logical stream over several calls: those sent but not answered go again first.

    Results come back in order, one per message, so the oldest unanswered
    message is the one each result answers. A call that failed may still
    have a gRPC thread reading from the input; a message it takes after
    the call is over is carried to the next call, never lost or sent twice
    in one call.
    """

    def __init__(self, messages: Iterable[tuple[str, str]]):
        self._source = iter(messages)
        self._read = threading.Lock()  # one reader of the input at a time
        self._state = threading.Lock()  # the current call, unanswered and carried messages
        self.unanswered: deque[tuple[str, str]] = deque()
        self._carried: deque[tuple[str, str]] = deque()
        self._call = None

    def for_call(self) -> Iterator[tuple[str, str]]:
        """The messages for a new call: the unanswered ones, then the rest of the input."""
        call = object()
        with self._state:
            self._call = call
            resend = list(self.unanswered)
        yield from resend
        while True:
            with self._read:
                with self._state:
                    if self._call is not call:
                        return
                    item = self._carried.popleft() if self._carried else None
                if item is None:
                    item = next(self._source, None)
                    if item is None:
                        return
                with self._state:
                    if self._call is not call:  # this call is over: keep the message for the next
                        self._carried.append(item)
                        return
                    self.unanswered.append(item)
            yield item

    def answered(self) -> None:
        with self._state:
            self.unanswered.popleft()


class ClassifierClient:
    """Blocking client for spam.v1.Classifier."""

    def __init__(self, target: str, token: str | None = None, tls_ca: Path | None = None, tls: bool = False):
        self.channel = make_channel(target, tls_ca, tls)
        self.stub = pb_grpc.ClassifierStub(self.channel)
        self.metadata = auth_metadata(token)

    def classify(
        self, text: str, message_id: str = "", timeout: float | None = None, explain: bool = False
    ) -> pb.ClassifyResponse:
        request = pb.ClassifyRequest(text=text, id=message_id, explain=explain)
        return self.stub.Classify(request, timeout=timeout, metadata=self.metadata)

    def report(
        self,
        label: str,
        reporter: str,
        verdict_id: str = "",
        text: str = "",
        reason: str = "",
        timeout: float | None = None,
    ) -> pb.ReportResponse:
        """Feedback on a verdict (by its id) or on a message (by its text): its true label."""
        request = pb.ReportRequest(verdict_id=verdict_id, text=text, label=label, reporter=reporter, reason=reason)
        return self.stub.Report(request, timeout=timeout, metadata=self.metadata)

    def classify_stream(
        self,
        messages: Iterable[tuple[str, str]],
        batch_size: int = 256,
        timeout: float | None = None,
        backoff: Backoff | None = Backoff(),
        on_retry: Callable[[grpc.RpcError, float], None] | None = None,
        explain: bool = False,
    ) -> Iterator[pb.Result]:
        """One Result per (id, text), in input order; raises grpc.RpcError if the call fails.

        A call refused or cut with RESOURCE_EXHAUSTED or UNAVAILABLE (server
        full, restarting, idle stream closed) is made again after a jittered
        backoff, resending what was not yet answered; `backoff=None` never
        retries. `timeout` bounds the whole, retries included.
        """
        feed = _Resendable(messages)
        deadline = None if timeout is None else time.monotonic() + timeout
        failures = 0
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            responses = self.stub.ClassifyStream(
                stream_requests(feed.for_call(), batch_size, explain=explain), timeout=remaining, metadata=self.metadata
            )
            try:
                for response in responses:
                    for result in response.results:
                        feed.answered()
                        failures = 0  # progress: the bound is on failures in a row
                        yield result
                return
            except grpc.RpcError as error:
                failures += 1
                if backoff is None or error.code() not in RETRYABLE or failures >= backoff.attempts:
                    raise
                delay = backoff.delay(failures, _pushback_seconds(error))
                if deadline is not None and time.monotonic() + delay >= deadline:
                    raise
                if on_retry is not None:
                    on_retry(error, delay)
                time.sleep(delay)
            finally:
                responses.cancel()

    def champion(self, timeout: float | None = None) -> pb.Champion:
        return self.stub.GetChampion(pb.GetChampionRequest(), timeout=timeout, metadata=self.metadata)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> ClassifierClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def result_json(result: pb.Result) -> dict:
    if result.WhichOneof("outcome") == "verdict":
        v = result.verdict
        record = {
            "id": result.id,
            "label": v.label,
            "tier": v.tier,
            "spam_probability": round(v.spam_probability, 6),
            "model_version": v.model_version,
            "verdict_id": v.verdict_id,
        }
        if v.HasField("explanation"):
            e = v.explanation
            record["explanation"] = [{"ngram": f.ngram, "kind": f.kind, "weight": round(f.weight, 4)} for f in e.features]
            if e.note:
                record["explanation_note"] = e.note
        return record
    return {
        "id": result.id,
        "error": {"code": _CODE_NAMES.get(result.error.code, str(result.error.code)), "message": result.error.message},
    }


@dataclass(frozen=True)
class Unreadable:
    """An input line that cannot be sent (not UTF-8): reported in its place, never sent."""

    id: str
    message: str

    def record(self) -> dict:
        return {"id": self.id, "error": {"code": "INVALID_ARGUMENT", "message": self.message}}


def _unsendable(text: str) -> str | None:
    """Why `text` cannot go into a protobuf string (lone surrogates from argv or JSON escapes), or None."""
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError as error:
        return f"{error.reason} at character {error.start}"


def _numbered_lines(lines: Iterable[str | bytes]) -> Iterator[tuple[int, str | Unreadable]]:
    """(line number, text) per non-blank line; bytes are decoded as UTF-8, a line that is not is Unreadable."""
    for number, line in enumerate(lines, start=1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as error:
                yield number, Unreadable(str(number), f"line {number} is not valid UTF-8 ({error.reason} at byte {error.start}); not sent")
                continue
        line = line.rstrip("\r\n")
        if line.strip():
            yield number, line


def read_messages(lines: Iterable[str | bytes], fmt: str = "auto") -> Iterator[tuple[str, str] | Unreadable]:
    """(id, text) per non-blank line: plain text (id = line number) or JSONL with `text` and optional `id`.

    Lines may be bytes (a file or stdin read as binary): a line that is not
    UTF-8 comes out as `Unreadable`, in its place, and reading goes on.
    `auto` decides from the first readable non-blank line: a JSON object with
    a `text` field means JSONL.
    """
    numbered = _numbered_lines(lines)
    ahead = []  # unreadable lines before the first readable one
    first = None
    for item in numbered:
        if isinstance(item[1], Unreadable):
            ahead.append(item)
            continue
        first = item
        break
    if fmt == "auto" and first is not None:
        fmt = "text"
        if first[1].lstrip().startswith("{"):
            try:
                record = json.loads(first[1])
                if isinstance(record, dict) and "text" in record:
                    fmt = "jsonl"
            except ValueError:
                pass
    for number, line in itertools.chain(ahead, [first] if first else [], numbered):
        if isinstance(line, Unreadable):
            yield line
            continue
        if fmt == "text":
            message_id, text = str(number), line
        else:
            try:
                record = json.loads(line)
            except ValueError as error:
                raise ValueError(f"line {number} is not valid JSON: {error}") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise ValueError(f"line {number} has no string `text` field")
            message_id, text = str(record.get("id", number)), record["text"]
        problem = _unsendable(message_id) or _unsendable(text)
        if problem:
            yield Unreadable(str(number), f"line {number} cannot be sent as UTF-8 ({problem}); not sent")
        else:
            yield message_id, text


class Progress:
    """Messages done and rate on stderr, for inputs big enough to wait on."""

    def __init__(self, enabled: bool, stream=sys.stderr, min_count: int = 1000):
        self.enabled, self.stream, self.min_count = enabled, stream, min_count
        self.tty = stream.isatty()
        self.start = self.last = time.monotonic()
        self.count = self.errors = 0
        self.shown = False

    def update(self, ok: bool) -> None:
        self.count += 1
        self.errors += not ok
        if not self.enabled or self.count < self.min_count or self.count % 256:
            return
        now = time.monotonic()
        if now - self.last >= (0.5 if self.tty else 5.0):
            self.last = now
            self._show(now, end="\r" if self.tty else "\n")

    def _show(self, now: float, end: str) -> None:
        rate = self.count / max(now - self.start, 1e-9)
        self.stream.write(f"spam-classify: {self.count:,} messages ({self.errors:,} rejected), {rate:,.0f}/s{end}")
        self.stream.flush()
        self.shown = True

    def finish(self) -> None:
        """A last line with the totals, for inputs big enough to have shown progress."""
        if self.shown or (self.enabled and self.count >= self.min_count):
            self._show(time.monotonic(), end="\n")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spam-classify", description=__doc__.split("\n\n")[0])
    p.add_argument("texts", nargs="*", help="messages to classify (default: read --file or stdin)")
    p.add_argument("--file", "-f", help="read messages from this file ('-' for stdin), one per line")
    p.add_argument("--format", choices=("auto", "text", "jsonl"), default="auto", help="input format (default: auto)")
    _connection_flags(p)
    p.add_argument("--batch-size", type=int, default=256, help="messages per stream request (default: %(default)s)")
    p.add_argument("--deadline", type=float, default=None, help="seconds the whole call may take (default: none)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    p.add_argument("--explain", action="store_true", help="add each verdict's top n-grams and their weights (slower)")
    return p


def _connection_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default=DEFAULT_TARGET, help="server address (default: %(default)s, env SPAM_SERVING_TARGET)")
    p.add_argument("--token", default=None, help=f"bearer token (default: ${TOKEN_ENV})")
    p.add_argument("--tls-ca", type=Path, default=None, help="PEM root certificate to trust; enables TLS")
    p.add_argument("--tls", action="store_true", help="use TLS with the system's root certificates")


def _default_reporter() -> str:
    try:
        return os.environ.get("SPAM_REPORTER") or getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        return ""


def report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spam-classify report",
        usage="spam-classify report VERDICT_ID {ham,spam} [options]\n       spam-classify report --text TEXT {ham,spam} [options]",
        description="Report the true label of a classified message (by its verdict_id) or of any message (--text).",
    )
    p.add_argument("args", nargs="+", metavar="ARG", help="the verdict id (unless --text), then the label: ham or spam")
    p.add_argument("--text", default="", help="the message's text, for a message without a verdict id")
    p.add_argument("--reporter", default=_default_reporter(), help="who reports (default: $SPAM_REPORTER, else your user name)")
    p.add_argument("--reason", default="", help="why (optional)")
    _connection_flags(p)
    p.add_argument("--deadline", type=float, default=10.0, help="seconds the call may take (default: %(default)s)")
    return p


def report_main(argv: list[str]) -> int:
    p = report_parser()
    args = p.parse_args(argv)
    if len(args.args) != (1 if args.text else 2):
        p.error("give VERDICT_ID LABEL, or --text TEXT LABEL")
    verdict_id, label = ("", args.args[0]) if args.text else args.args
    token = args.token or os.environ.get(TOKEN_ENV) or None
    try:
        with ClassifierClient(args.target, token, args.tls_ca, args.tls) as client:
            stored = client.report(label, args.reporter, verdict_id, args.text, args.reason, timeout=args.deadline)
    except grpc.RpcError as error:
        print(f"spam-classify: {error.code().name}: {error.details()}", file=sys.stderr)
        refused = error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
        return 1 if refused else 2
    print(json.dumps({"report_id": stored.report_id, "created": stored.created}))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "report":
        return report_main(argv[1:])
    args = parser().parse_args(argv)
    if args.batch_size < 1:
        print("spam-classify: --batch-size must be at least 1", file=sys.stderr)
        return 2
    token = args.token or os.environ.get(TOKEN_ENV) or None
    source = None
    if args.texts:
        messages: Iterable[tuple[str, str] | Unreadable] = (
            (str(i), t) if not _unsendable(t) else Unreadable(str(i), f"argument {i} is not valid UTF-8; not sent")
            for i, t in enumerate(args.texts, start=1)
        )
    elif args.file and args.file != "-":
        try:
            source = open(args.file, "rb")  # noqa: SIM115 - closed below; binary: a bad line must not stop the rest
        except OSError as error:
            print(f"spam-classify: cannot read {args.file}: {error.strerror}", file=sys.stderr)
            return 2
        messages = read_messages(source, args.format)
    else:
        if sys.stdin.isatty():
            print("spam-classify: reading messages from the terminal; end with Ctrl-D", file=sys.stderr)
        messages = read_messages(sys.stdin.buffer, args.format)
    progress = Progress(enabled=not args.quiet)
    out = sys.stdout
    bad_input: list[ValueError] = []
    # Per message read, in input order: None once it is sent, or the report of a line that could not be.
    # Filled by gRPC's thread as it reads the input, emptied here as results arrive, so reports keep their place.
    in_order: deque[Unreadable | None] = deque()

    def guarded(items: Iterable[tuple[str, str] | Unreadable]) -> Iterator[tuple[str, str]]:
        # gRPC reads requests in its own thread; an exception there would only cancel the call.
        try:
            for item in items:
                if isinstance(item, Unreadable):
                    in_order.append(item)
                    continue
                in_order.append(None)
                yield item
        except ValueError as error:
            bad_input.append(error)

    def write(record: dict) -> None:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        progress.update("error" not in record)

    def write_unreadable() -> None:
        while in_order and in_order[0] is not None:
            unreadable = in_order.popleft()
            print(f"spam-classify: {unreadable.message}", file=sys.stderr)
            write(unreadable.record())

    def retrying(error: grpc.RpcError, delay: float) -> None:
        print(f"spam-classify: {error.code().name}: {error.details()}; retrying in {delay:.1f} s", file=sys.stderr)

    try:
        with ClassifierClient(args.target, token, args.tls_ca, args.tls) as client:
            results = client.classify_stream(
                guarded(messages), args.batch_size, args.deadline, on_retry=retrying, explain=args.explain
            )
            for result in results:
                write_unreadable()
                in_order.popleft()  # the message this result answers
                write(result_json(result))
        write_unreadable()
    except grpc.RpcError as error:
        progress.finish()
        print(f"spam-classify: {error.code().name}: {error.details()}", file=sys.stderr)
        return 2
    finally:
        if source is not None:
            source.close()
        out.flush()
    progress.finish()
    if bad_input:
        print(f"spam-classify: stopped reading input: {bad_input[0]}", file=sys.stderr)
        return 2
    return 1 if progress.errors else 0


if __name__ == "__main__":
    sys.exit(main())
