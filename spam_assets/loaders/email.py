"""Raw RFC 822 e-mail: a folder tree, the same tree in a tar archive, or an mbox file.

A message's text is its Subject, a newline, then its body: the text/plain
parts, or the text/html parts reduced to text when there is no plain text.
Labels come from names: a folder (or mbox file) whose name starts with "spam"
holds spam, one whose name contains "ham" holds ham.

Real mail is messy, so decoding never gives up on a message: a header the
modern parser cannot handle sends it to the legacy (compat32) parser, and a
body whose declared charset is unknown or wrong is decoded as UTF-8, else
Latin-1. What is not mail at all (no headers) is an error naming the file.
"""

from __future__ import annotations

import codecs
import email
import email.errors
import email.header
import email.message
import email.policy
import functools
import logging
import re
import os
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from spam_assets.loaders._bytes import check_text_bytes, read_file_capped, without_surrogates
from spam_assets.loaders._common import BatchFormatError, LimitExceededError, Problems, Record, report
from spam_assets.loaders.files import open_regular, read_capped, regular_files
from spam_assets.loaders.limits import ENV, RATIO_GRACE_BYTES, Limits, human, over

log = logging.getLogger(__name__)

# Suffixes read_batch treats as e-mail archives (tarfile's "r:*" opens them all).
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
# A file is mail if it has at least one of these; a stray text file has none of them.
_MAIL_HEADERS = frozenset(
    "from to cc subject date received message-id return-path reply-to sender "
    "delivered-to mime-version content-type x-mailer".split()
)
# Plain-text bodies that are really HTML (common in spam sent without MIME headers).
_LOOKS_LIKE_HTML = re.compile(r"<\s*(html|body|head|table|font|div|p|br|a\s+href)\b", re.IGNORECASE)
_MBOX_FROM_LINE = re.compile(rb"^From .*$\n?", re.MULTILINE)
_PRINTABLE_ASCII = bytes(range(0x20, 0x7F)) + b"\t\n\r"


def label_from_name(name: str) -> str | None:
    """'spam*' -> spam, '*ham*' -> ham, else None (e.g. 'spam-2', 'easy-ham-1', 'hard_ham.mbox')."""
    name = name.lower()
    if name.startswith("spam"):
        return "spam"
    if "ham" in name:
        return "ham"
    return None


class _Policy(email.policy.EmailPolicy):
    """policy.default, parsing each distinct header value once.

    The parser and walk() ask for a part's Content-Type several times, and the
    modern header parser re-parses it each time: that was 3/4 of the run time.
    Parsed headers are immutable, so sharing them between messages is safe.
    """

    def header_fetch_parse(self, name: str, value: str) -> str:  # a header object is a str
        return value if hasattr(value, "name") else _parse_header(name, value)


@functools.lru_cache(maxsize=4096)
def _parse_header(name: str, value: str) -> str:
    return email.policy.default.header_fetch_parse(name, value)


_POLICY = _Policy()


@dataclass(frozen=True)
class ParsedMessage:
    text: str
    charset_fallbacks: int  # body parts (or a subject) whose charset had to be guessed
    compat32: bool  # the modern parser failed on it
    doubt: str | None = None  # why the text may be garbled (a mislabelled charset): flagged, not kept silently


def message_text(raw: bytes, name: str = "message") -> str:
    """Subject + "\\n" + body of one raw message; `name` is used in errors."""
    return parse_message(raw, name).text


def parse_message(raw: bytes, name: str = "message") -> ParsedMessage:
    """The text of a raw message and how much leniency it needed; BatchFormatError if it is not mail."""
    check_text_bytes(raw, name, what="message file")
    try:
        message = email.message_from_bytes(raw, policy=_POLICY)
        _require_mail(message, name)
        subject, subject_fallback = _subject(message, modern=True)
        body, fallbacks, doubt = _body(message)
        compat32 = False
    except BatchFormatError:
        raise
    except Exception:  # the modern header parser still has edge cases that raise
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
        _require_mail(message, name)
        subject, subject_fallback = _subject(message, modern=False)
        body, fallbacks, doubt = _body(message)
        compat32 = True
    text = f"{subject.strip()}\n{body}".strip()
    return ParsedMessage(without_surrogates(text), fallbacks + subject_fallback, compat32, doubt)


def _require_mail(message: email.message.Message, name: str) -> None:
    if not any(key.lower() in _MAIL_HEADERS for key in message.keys()):
        raise BatchFormatError(
            "is not an e-mail message (no From/To/Subject/Date/Received... header)", path=name
        )


def _subject(message: email.message.Message, *, modern: bool) -> tuple[str, bool]:
    """The decoded Subject, and whether it held raw 8-bit bytes that needed a charset guess.

    Both parsers would turn raw 8-bit bytes (e.g. a Latin-1 "\u00a3" in a subject) into
    U+FFFD, so they are decoded here first; encoded words (=?...?=) are left to the parser.
    """
    raw = next((value for key, value in message.raw_items() if key.lower() == "subject"), None)
    if raw is None:
        return "", False
    fell_back = False
    if not raw.isascii():  # the bytes parser keeps 8-bit bytes as (non-ASCII) surrogate escapes
        raw, fell_back, _ = _decode_bytes(raw.encode("ascii", "surrogateescape"), None)
    if modern:
        return str(_parse_header("subject", raw)), fell_back
    try:
        return str(email.header.make_header(email.header.decode_header(raw))), fell_back
    except (LookupError, ValueError, email.errors.HeaderParseError):
        return raw, fell_back


def _body(message: email.message.Message) -> tuple[str, int, str | None]:
    plain, html, fallbacks, doubts = [], [], 0, []
    for part in message.walk():
        if part.is_multipart():
            continue
        content_type = part.get_content_type()
        # A multipart type with no usable boundary leaves its raw body as one part: read it as text.
        if content_type not in ("text/plain", "text/html") and not content_type.startswith("multipart/"):
            continue
        text, fell_back, doubt = _decode_bytes(part.get_payload(decode=True) or b"", part.get_content_charset())
        fallbacks += fell_back
        doubts += [doubt] if doubt else []
        if content_type == "text/html":
            html.append(text)
        elif _LOOKS_LIKE_HTML.search(text[:4096]):
            plain.append(html_to_text(text))
        else:
            plain.append(text)
    if not any(text.strip() for text in plain):  # an empty plain part is only a placeholder
        plain = [html_to_text(text) for text in html]
    return "\n".join(text.strip() for text in plain if text.strip()), fallbacks, (doubts[0] if doubts else None)


def _decode_bytes(data: bytes, charset: str | None) -> tuple[str, bool, str | None]:
    """Decode with the declared charset (RFC default us-ascii) or else the first that fits:
    UTF-8, Windows-1252 (what undeclared 8-bit mail mostly is), Latin-1 (never fails).
    Also returns whether the declared charset was unknown or wrong, and a doubt: why the
    text may not be what the sender wrote (flagged: quarantined or rejected, never silently kept)."""
    doubt = None
    try:
        codec = codecs.lookup(charset or "us-ascii").name
        if not (codec.startswith(("utf-16", "utf-32")) and mislabelled_as_wide(data)):
            return data.decode(codec), False, None
        doubt = (
            f"a part declared charset {charset} holds 8-bit text (decoded as declared it would be "
            "CJK mojibake); fix the declared charset"
        )
    except (LookupError, ValueError):  # unknown charset, or bytes it cannot decode
        pass
    for fallback in ("utf-8", "cp1252"):
        try:
            return data.decode(fallback), True, doubt
        except UnicodeDecodeError:
            pass
    return data.decode("latin-1"), True, doubt


def mislabelled_as_wide(data: bytes) -> bool:
    """True for 8-bit text declared UTF-16/32: decoded as declared, byte pairs of English become CJK.

    Real UTF-16/32 text has a byte-order mark, or NULs (ASCII and Latin letters), or
    many bytes outside printable ASCII (CJK: the low byte of each unit is anything).
    """
    if len(data) < 16 or data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\0" in data:
        return False
    printable = len(data) - len(data.translate(None, _PRINTABLE_ASCII))
    return printable / len(data) >= 0.9


class _HTMLText(HTMLParser):
    """Collects the visible text of an HTML document."""

    _SKIP = frozenset({"script", "style"})
    _BREAKS = frozenset(
        "br p div tr li ul ol table title h1 h2 h3 h4 h5 h6 blockquote hr pre center dd dt".split()
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)  # unescapes &amp; &#8364; ... in data
        self.chunks: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BREAKS:
            self.chunks.append("\n")
        elif tag in ("td", "th"):
            self.chunks.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BREAKS:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.chunks.append(data)


def html_to_text(html: str) -> str:
    """Visible text of an HTML fragment: tags, scripts and styles removed, entities unescaped."""
    parser = _HTMLText()
    try:
        parser.feed(html)
        # An unclosed tag at the end would otherwise be flushed as text by close().
        parser.rawdata = parser.rawdata.split("<", 1)[0]
        parser.close()
        text = "".join(parser.chunks)
    except Exception:  # HTMLParser still asserts on some malformed markup; be crude rather than fail
        text = re.sub(r"<[^>]*>", " ", html)
    lines = (" ".join(line.split()) for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def read_email_tree(root: Path | str, limits: Limits | None = None, problems: Problems | None = None) -> list[Record]:
    """Every file under `root` (hidden ones skipped), labelled by its folder; source is the relative path.

    Only regular files and real folders: a symlink, FIFO, device or socket anywhere in the
    tree refuses the whole tree unread (it is not mail someone sent; it may point anywhere).
    """
    root, limits = Path(root), limits or Limits.from_env()
    names = sorted((name, path) for name, path in regular_files(root) if not _hidden(name))
    budget = _Budget(limits, root)

    def contents() -> Iterator[tuple[str, bytes | BatchFormatError]]:
        for name, path in names:
            try:
                with open_regular(path) as file:
                    data = read_capped(file, limits.member_bytes, "the message file", path, "member_bytes")
            except LimitExceededError as error:  # one oversized file is a bad row, not a bad batch
                yield name, error
                continue
            budget.add(len(data))
            yield name, data

    return _read_messages(root, contents(), limits, problems)


def read_email_archive(path: Path | str, limits: Limits | None = None, problems: Problems | None = None) -> list[Record]:
    """The same as read_email_tree, from a tar archive streamed in order (never extracted).

    A member larger than limits.member_bytes (by its header, before reading it), more than
    limits.batch_bytes in all, or a decompressed/compressed ratio above limits.compression_ratio
    refuses the archive there: nothing after it is decompressed.
    """
    path, limits = Path(path), limits or Limits.from_env()
    budget = _Budget(limits, path)
    contents: list[tuple[str, bytes | BatchFormatError]] = []
    try:
        with open_regular(path) as raw:
            size = os.fstat(raw.fileno()).st_size
            if size > limits.file_bytes:
                raise LimitExceededError(over("the archive", human(size), limits.file_bytes, "file_bytes"), path=str(path))
            compressed = _CountingReader(raw)
            with tarfile.open(fileobj=compressed, mode="r|*") as archive:  # type: ignore[call-overload]
                for member in archive:
                    name = member.name.removeprefix("./")
                    if not member.isfile() or _hidden(name):
                        continue  # links, devices and folders are not messages: skipped unread
                    where = f"{path}/{name}"
                    if member.size > limits.member_bytes:
                        raise LimitExceededError(
                            over(f"member {name}", f"{human(member.size)} decompressed", limits.member_bytes, "member_bytes")
                            + "; the archive was not read further",
                            path=str(path),
                        )
                    data = archive.extractfile(member).read(member.size)  # type: ignore[union-attr]
                    budget.add(len(data))
                    _check_ratio(budget.total, compressed.count, limits, path)
                    parsed = _parse_or_error(data, where, limits)
                    contents.append((name, parsed))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise BatchFormatError(f"is not a readable tar archive: {error}", path=str(path)) from None
    return _read_messages(path, contents, limits, problems)


def read_mbox(path: Path | str, default_label: str | None = None, limits: Limits | None = None, problems: Problems | None = None) -> list[Record]:
    """Each message of an mbox file, labelled by the file's name or else `default_label`."""
    path, limits = Path(path), limits or Limits.from_env()
    data = read_file_capped(path, limits)
    check_text_bytes(data, path)
    label = label_from_name(path.name) or default_label
    if label is None:
        raise BatchFormatError(
            "cannot tell whether this mbox holds spam or ham: name it spam*.mbox or *ham*.mbox, "
            "or set SourceSpec.default_label",
            path=str(path),
        )
    separators = list(_MBOX_FROM_LINE.finditer(data))
    if not separators or data[: separators[0].start()].strip():
        raise BatchFormatError("is not an mbox file: it must start with a `From ` line", path=str(path))
    ends = [separator.start() for separator in separators[1:]] + [len(data)]
    items = []
    for number, (separator, end) in enumerate(zip(separators, ends), start=1):
        where = f"{path} message {number}"
        if end - separator.end() > limits.member_bytes:
            parsed: ParsedMessage | BatchFormatError = LimitExceededError(
                over("the message", human(end - separator.end()), limits.member_bytes, "member_bytes"), path=where
            )
        else:
            parsed = _parse_or_error(data[separator.end() : end], where, limits)
        items.append((f"{path.name}:{number}", label, parsed))
    return _finish(path, items, problems)


class _CountingReader:
    """A file wrapper counting the (compressed) bytes the archive reader has taken."""

    def __init__(self, file: BinaryIO) -> None:
        self.file, self.count = file, 0

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        self.count += len(data)
        return data


class _Budget:
    """Decompressed bytes read for one batch, against limits.batch_bytes."""

    def __init__(self, limits: Limits, path: Path) -> None:
        self.limits, self.path, self.total = limits, path, 0

    def add(self, size: int) -> None:
        self.total += size
        if self.total > self.limits.batch_bytes:
            raise LimitExceededError(
                over("the batch", f"more than {human(self.limits.batch_bytes)} of messages", self.limits.batch_bytes, "batch_bytes"),
                path=str(self.path),
            )


def _check_ratio(decompressed: int, compressed: int, limits: Limits, path: Path) -> None:
    if decompressed > RATIO_GRACE_BYTES and decompressed > limits.compression_ratio * max(compressed, 1):
        raise LimitExceededError(
            f"decompresses to {human(decompressed)} from {human(compressed)} (ratio {decompressed / max(compressed, 1):.0f}, "
            f"over the limit of {limits.compression_ratio:g}: a decompression bomb?; set {ENV['compression_ratio']} "
            "to change it); the archive was not read further",
            path=str(path),
        )


def _parse_or_error(raw: bytes, where: str, limits: Limits) -> ParsedMessage | BatchFormatError:
    """Parse now (so the raw bytes can be dropped), keeping a failure to report in row order."""
    try:
        parsed = parse_message(raw, where)
    except BatchFormatError as error:
        return error
    if len(parsed.text) > limits.message_bytes:  # characters: at least as many bytes, cheap to count
        return LimitExceededError(
            over("the message text", f"{human(len(parsed.text))} characters", limits.message_bytes, "message_bytes"),
            path=where,
        )
    if parsed.doubt:
        return DoubtfulText(parsed.doubt, parsed.text, path=where)
    return parsed


class DoubtfulText(BatchFormatError):
    """A message that parsed, but whose text is probably garbled: reported with what it decoded to."""

    def __init__(self, message: str, text: str, *, row: int | None = None, path: str | None = None):
        super().__init__(message, row=row, path=path)
        self.text = text


def _hidden(name: str) -> bool:
    """Dotfiles and dot-folders (.DS_Store, macOS '._x' companions) are not messages."""
    return any(part.startswith(".") for part in PurePosixPath(name).parts)


def _folder_label(name: str, container: Path) -> str | None:
    """The label of the top-most folder that has one; a file at the top takes the container's."""
    folders = PurePosixPath(name).parts[:-1]
    if not folders:
        return label_from_name(container.name)
    return next((label for folder in folders if (label := label_from_name(folder))), None)


def _top_folder(name: str) -> str:
    parts = PurePosixPath(name).parts
    return parts[0] if len(parts) > 1 else "(top level)"


def _read_messages(
    container: Path, contents: Iterable[tuple[str, bytes | ParsedMessage | BatchFormatError]],
    limits: Limits, problems: Problems | None,
) -> list[Record]:
    """Records from (relative name, raw bytes or a parse result) pairs, labelled by folder, in name order."""
    parsed = sorted(
        ((name, _parse_or_error(content, f"{container}/{name}", limits) if isinstance(content, bytes) else content)
         for name, content in contents),
        key=lambda item: item[0],
    )
    if not parsed:
        raise BatchFormatError("contains no message files", path=str(container))
    labels = [_folder_label(name, container) for name, _ in parsed]
    unlabelled = sorted({_top_folder(name) for (name, _), label in zip(parsed, labels) if label is None})
    if unlabelled:
        raise BatchFormatError(
            f"folders that are neither spam nor ham: {', '.join(unlabelled[:10])}"
            f"{' ...' if len(unlabelled) > 10 else ''} (a folder name must start with 'spam' or contain 'ham')",
            path=str(container),
        )
    return _finish(container, [(name, label, result) for (name, result), label in zip(parsed, labels)], problems)


def _finish(
    container: Path, items: list[tuple[str, str, ParsedMessage | BatchFormatError]], problems: Problems | None
) -> list[Record]:
    """Records from (source, label, parse result), numbered from 1 in order; failures and doubts reported."""
    records, stats = [], _Stats()
    for row, (source, label, result) in enumerate(items, start=1):
        if isinstance(result, DoubtfulText):
            report(problems, DoubtfulText(result.reason, result.text, row=row, path=result.path), source, result.text)
            continue
        if isinstance(result, BatchFormatError):
            report(problems, type(result)(result.reason, row=row, path=result.path), source)
            continue
        stats.add(result)
        records.append(Record(result.text, label, source, row))
    stats.log(container)
    return records


@dataclass
class _Stats:
    """How often real mail needed the lenient paths (logged, so drift in the input shows)."""

    messages: int = 0
    charset_fallbacks: int = 0
    compat32: int = 0

    def add(self, parsed: ParsedMessage) -> None:
        self.messages += 1
        self.charset_fallbacks += parsed.charset_fallbacks > 0
        self.compat32 += parsed.compat32

    def log(self, container: Path) -> None:
        log.info(
            "%s: %d messages, %d needed a charset fallback, %d needed the compat32 parser",
            container, self.messages, self.charset_fallbacks, self.compat32,
        )
