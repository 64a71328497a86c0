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
import tarfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath

from spam_assets.loaders._bytes import check_text_bytes, without_surrogates
from spam_assets.loaders._common import BatchFormatError, Record

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
        body, fallbacks = _body(message)
        compat32 = False
    except BatchFormatError:
        raise
    except Exception:  # the modern header parser still has edge cases that raise
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
        _require_mail(message, name)
        subject, subject_fallback = _subject(message, modern=False)
        body, fallbacks = _body(message)
        compat32 = True
    text = f"{subject.strip()}\n{body}".strip()
    return ParsedMessage(without_surrogates(text), fallbacks + subject_fallback, compat32)


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
        raw, fell_back = _decode_bytes(raw.encode("ascii", "surrogateescape"), None)
    if modern:
        return str(_parse_header("subject", raw)), fell_back
    try:
        return str(email.header.make_header(email.header.decode_header(raw))), fell_back
    except (LookupError, ValueError, email.errors.HeaderParseError):
        return raw, fell_back


def _body(message: email.message.Message) -> tuple[str, int]:
    plain, html, fallbacks = [], [], 0
    for part in message.walk():
        if part.is_multipart():
            continue
        content_type = part.get_content_type()
        # A multipart type with no usable boundary leaves its raw body as one part: read it as text.
        if content_type not in ("text/plain", "text/html") and not content_type.startswith("multipart/"):
            continue
        text, fell_back = _decode_bytes(part.get_payload(decode=True) or b"", part.get_content_charset())
        fallbacks += fell_back
        if content_type == "text/html":
            html.append(text)
        elif _LOOKS_LIKE_HTML.search(text[:4096]):
            plain.append(html_to_text(text))
        else:
            plain.append(text)
    if not any(text.strip() for text in plain):  # an empty plain part is only a placeholder
        plain = [html_to_text(text) for text in html]
    return "\n".join(text.strip() for text in plain if text.strip()), fallbacks


def _decode_bytes(data: bytes, charset: str | None) -> tuple[str, bool]:
    """Decode with the declared charset (RFC default us-ascii) or else the first that fits:
    UTF-8, Windows-1252 (what undeclared 8-bit mail mostly is), Latin-1 (never fails).
    Also returns whether the declared charset was unknown or wrong."""
    try:
        return data.decode(codecs.lookup(charset or "us-ascii").name), False
    except (LookupError, ValueError):  # unknown charset, or bytes it cannot decode
        pass
    for fallback in ("utf-8", "cp1252"):
        try:
            return data.decode(fallback), True
        except UnicodeDecodeError:
            pass
    return data.decode("latin-1"), True


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


def read_email_tree(root: Path | str) -> list[Record]:
    """Every file under `root` (hidden ones skipped), labelled by its folder; source is the relative path."""
    root = Path(root)
    files = sorted((path.relative_to(root).as_posix(), path) for path in root.rglob("*") if path.is_file())
    return _read_messages(root, ((name, path) for name, path in files if not _hidden(name)))


def read_email_archive(path: Path | str) -> list[Record]:
    """The same as read_email_tree, from a tar archive read in memory (never extracted)."""
    path = Path(path)
    try:
        with tarfile.open(path, "r:*") as archive:
            contents = [
                (name, archive.extractfile(member).read())  # type: ignore[union-attr]
                for member in archive  # in stream order: random access into a .gz re-reads it
                if member.isfile() and not _hidden(name := member.name.removeprefix("./"))
            ]
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise BatchFormatError(f"is not a readable tar archive: {error}", path=str(path)) from None
    return _read_messages(path, sorted(contents, key=lambda item: item[0]))


def read_mbox(path: Path | str, default_label: str | None = None) -> list[Record]:
    """Each message of an mbox file, labelled by the file's name or else `default_label`."""
    path = Path(path)
    data = path.read_bytes()
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
    return _parse_all(
        path,
        [
            (f"{path.name}:{number}", label, data[separator.end() : end], f"{path} message {number}")
            for number, (separator, end) in enumerate(zip(separators, ends), start=1)
        ],
    )


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


def _read_messages(container: Path, messages: Iterable[tuple[str, Path | bytes]]) -> list[Record]:
    """Records from (relative name, file or bytes) pairs, all labelled before any is parsed."""
    messages = list(messages)
    if not messages:
        raise BatchFormatError("contains no message files", path=str(container))
    labels = [_folder_label(name, container) for name, _ in messages]
    unlabelled = sorted({_top_folder(name) for (name, _), label in zip(messages, labels) if label is None})
    if unlabelled:
        raise BatchFormatError(
            f"folders that are neither spam nor ham: {', '.join(unlabelled[:10])}"
            f"{' ...' if len(unlabelled) > 10 else ''} (a folder name must start with 'spam' or contain 'ham')",
            path=str(container),
        )
    return _parse_all(
        container,
        [(name, label, content, f"{container}/{name}") for (name, content), label in zip(messages, labels)],
    )


def _parse_all(container: Path, messages: list[tuple[str, str, Path | bytes, str]]) -> list[Record]:
    """Records from (source, label, file or bytes, name for errors), numbered from 1 in order."""
    records, stats = [], _Stats()
    for row, (source, label, content, where) in enumerate(messages, start=1):
        raw = content.read_bytes() if isinstance(content, Path) else content
        try:
            parsed = parse_message(raw, where)
        except BatchFormatError as error:
            raise BatchFormatError(error.reason, row=row, path=error.path) from None
        stats.add(parsed)
        records.append(Record(parsed.text, label, source, row))
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
