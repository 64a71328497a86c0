"""Batch loaders: every format on small generated files, every malformed case, and the real corpora."""

from __future__ import annotations

import base64
import json
import re
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from spam_assets.loaders import (
    COLUMNS,
    BatchFormatError,
    LimitExceededError,
    Limits,
    RefusedEntryError,
    SourceSpec,
    detect_format,
    read_batch,
    read_batch_rows,
)
from spam_assets.loaders import email as email_loader
from spam_assets.loaders.email import html_to_text, parse_message
from spam_assets.loaders.feed import STATE_FILE, Feed, row_id, write_jsonl
from tests.datasets import sms_or_skip, spamassassin_or_skip

TAG = re.compile(r"<[a-zA-Z/!][^>]*>")


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def read_error(path: Path, spec: SourceSpec = SourceSpec()) -> BatchFormatError:
    with pytest.raises(BatchFormatError) as caught:
        read_batch(path, spec)
    return caught.value


# --- real RFC 822 messages --------------------------------------------------------------------

HEADERS = "From: Alice <alice@example.org>\nTo: bob@example.org\nDate: Mon, 2 Sep 2002 10:00:00 +0000\n"

MULTIPART_ALTERNATIVE = (
    HEADERS
    + "Subject: =?utf-8?q?Caf=C3=A9_meeting?=\n"
    + 'MIME-Version: 1.0\nContent-Type: multipart/alternative; boundary="XYZ"\n\n'
    + "This is a multi-part message in MIME format.\n"
    + "--XYZ\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n"
    + "Lunch at the caf=C3=A9 at noon? It costs =E2=82=AC5 and the walk is a bit lo=\nng.\n"
    + "--XYZ\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
    + base64.encodebytes("<p>HTML version of the lunch</p>".encode()).decode()
    + "--XYZ--\n"
).encode()

BASE64_PLAIN = (
    HEADERS
    + "Subject: Greetings\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
    + "Content-Transfer-Encoding: base64\n\n"
    + base64.encodebytes("Grüße aus Köln\n".encode()).decode()
).encode()

LATIN1 = (
    HEADERS.encode()
    + b"Subject: Dessert\nMIME-Version: 1.0\nContent-Type: text/plain; charset=iso-8859-1\n"
    + b"Content-Transfer-Encoding: 8bit\n\nCr\xe8me br\xfbl\xe9e for everyone.\n"
)

HTML_ONLY = (
    HEADERS
    + "Subject: You WON\nMIME-Version: 1.0\nContent-Type: text/html; charset=us-ascii\n\n"
    + "<html><head><title>Prize</title><style>.x { color: red }</style>"
    + "<script>var tracking = 1;</script></head>\n<body><!-- hidden comment -->"
    + "<h1>WIN &amp; SAVE</h1><p>Only &#163;5 <b>today</b></p>"
    + "<table><tr><td>Claim</td><td>now</td></tr></table><br>Bye</body></html>\n"
).encode()

BOGUS_CHARSET = (
    HEADERS.encode()
    + b"Subject: Win \xa3100 now\nContent-Type: text/plain; charset=x-no-such-charset\n\n"
    + "Caf\u00e9 prize\n".encode()
)


def write_tree(root: Path) -> Path:
    write(root / "spam-1" / "0001.eml", HTML_ONLY)
    write(root / "spam-1" / "0002.eml", BOGUS_CHARSET)
    write(root / "easy-ham-1" / "0001.eml", MULTIPART_ALTERNATIVE)
    write(root / "easy-ham-1" / ".DS_Store", b"\0\0\0\1Bud1")  # hidden: not a message
    write(root / "hard-ham-1" / "sub" / "0001.eml", LATIN1)
    return root


def write_tar(tree: Path, path: Path, prefix: str = "") -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for folder in sorted(tree.iterdir()):
            archive.add(folder, arcname=prefix + folder.name)
    return path


# --- SMS -----------------------------------------------------------------------------------------


def test_sms_reads_tab_separated_lines_without_quoting(tmp_path: Path) -> None:
    path = write(
        tmp_path / "SMSSpamCollection",
        'ham\t"Hi" she said, "see you"\r\n'
        'spam\tFREE "entry" to win £100\n'
        "\n"  # blank lines are skipped, numbering keeps counting file lines
        "HAM \tline\u2028separator and \x0b vertical tab stay inside the text\n"
        "maybe\tlabels are not validated here\n"
        "\tlabel cell missing\n"
        "ham\t\n",
    )
    frame = read_batch(path)
    assert list(frame.columns) == list(COLUMNS)
    assert frame["text"].tolist() == [
        '"Hi" she said, "see you"',
        'FREE "entry" to win £100',
        "line\u2028separator and \x0b vertical tab stay inside the text",
        "labels are not validated here",
        "label cell missing",
        "",
    ]
    assert frame["label"].tolist() == ["ham", "spam", "ham", "maybe", "", "ham"]
    assert frame["row"].tolist() == [1, 2, 4, 5, 6, 7]
    assert frame["source"].tolist()[:2] == ["SMSSpamCollection:1", "SMSSpamCollection:2"]
    assert frame["row"].dtype == "int64"


def test_sms_line_without_tab_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "sms.txt", "ham\tfine\nspam\tfine too\nham no tab here\n")
    error = read_error(path)
    assert error.row == 3 and error.path == str(path)
    assert "line 3 has no TAB" in str(error) and "ham no tab here" in str(error)


# --- bytes: empty, binary, encoding ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["batch.csv", "batch.jsonl", "SMSSpamCollection", "inbox.mbox"])
@pytest.mark.parametrize("content", [b"", b"  \n\t\r\n  "])
def test_empty_file_is_an_error(tmp_path: Path, name: str, content: bytes) -> None:
    error = read_error(write(tmp_path / name, content))
    assert "is empty" in str(error) and name in str(error)


@pytest.mark.parametrize(
    "junk, detail",
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64), "NUL byte at offset 8"),
        (bytes(range(1, 256)) * 4, "control bytes"),  # no NUL, but a tenth are control bytes
    ],
)
@pytest.mark.parametrize("name", ["batch.csv", "batch.tsv", "received-file", "spam.mbox"])
def test_binary_junk_is_detected_before_parsing(tmp_path: Path, junk: bytes, detail: str, name: str) -> None:
    error = read_error(write(tmp_path / name, junk))
    assert "binary, not text" in str(error) and detail in str(error)


def test_latin1_sms_names_the_line_and_suggests_utf8(tmp_path: Path) -> None:
    error = read_error(write(tmp_path / "sms", b"ham\tok\nspam\tcaf\xe9 prize\n"))
    assert error.row == 2
    assert "line 2 is not valid UTF-8 (byte 0xe9 at byte 9 of the line)" in str(error)
    assert "re-encode the file as UTF-8" in str(error)


def test_latin1_csv_names_the_line(tmp_path: Path) -> None:
    error = read_error(write(tmp_path / "batch.csv", b"text,label\nok,ham\n\"caf\xe9\",spam\n"))
    assert "line 3 is not valid UTF-8" in str(error) and "re-encode" in str(error)


def test_utf16_is_reported_as_a_wrong_encoding(tmp_path: Path) -> None:
    error = read_error(write(tmp_path / "batch.csv", "text,label\nhi,ham\n".encode("utf-16")))
    assert "UTF-16" in str(error) and "re-encode it as UTF-8" in str(error)


# --- CSV / TSV / JSONL ------------------------------------------------------------------------------


def test_csv_keeps_quoted_fields_and_every_text_as_a_string(tmp_path: Path) -> None:
    path = write(
        tmp_path / "batch.csv",
        "\ufeffid,text,label,extra\n"  # Excel's BOM, an extra column
        '1,"Hello, world",ham,x\n'
        '2,"She said ""call me""\nthen left",SPAM,x\n'
        "3,NA,ham,x\n"  # pandas would make this NaN
        "\n"
        "4,null,\n"  # empty label cell
        "5,short row\n",  # missing trailing cells
    )
    frame = read_batch(path)
    assert frame["text"].tolist() == ["Hello, world", 'She said "call me"\nthen left', "NA", "null", "short row"]
    assert frame["label"].tolist() == ["ham", "spam", "ham", "", ""]
    assert frame["row"].tolist() == [1, 2, 3, 4, 5]
    assert frame["source"].iloc[-1] == "batch.csv:5"


def test_tsv_and_custom_column_names(tmp_path: Path) -> None:
    path = write(tmp_path / "batch.tsv", "message\tclass\nhello there\tHam\n\"a\ttab\"\tspam\n")
    frame = read_batch(path, SourceSpec(text_column="message", label_column="class"))
    assert frame[["text", "label"]].values.tolist() == [["hello there", "ham"], ["a\ttab", "spam"]]


@pytest.mark.parametrize(
    "name, content",
    [
        ("batch.csv", "message,label\nhi,ham\n"),
        ("batch.jsonl", '{"message": "hi", "label": "ham"}\n{"label": "spam", "id": 2}\n'),
    ],
)
def test_missing_column_names_it_and_the_columns_found(tmp_path: Path, name: str, content: str) -> None:
    error = read_error(write(tmp_path / name, content))
    assert "missing column 'text'" in str(error)
    assert "columns found: 'message', 'label'" in str(error)


def test_missing_columns_are_all_named(tmp_path: Path) -> None:
    error = read_error(write(tmp_path / "batch.csv", "a,b\n1,2\n"), SourceSpec(label_column="class"))
    assert "missing columns 'text', 'class'; columns found: 'a', 'b'" in str(error)


def test_csv_row_with_too_many_fields_is_an_error(tmp_path: Path) -> None:
    error = read_error(write(tmp_path / "batch.csv", "text,label\nfine,ham\nHello, world,spam\n"))
    assert error.row == 2 and "line 3 has 3 fields but the header has 2" in str(error)


def test_csv_unterminated_quote_is_an_error(tmp_path: Path) -> None:
    error = read_error(write(tmp_path / "batch.csv", 'text,label\nfine,ham\n"never closed,spam\n'))
    assert "malformed CSV" in str(error) and error.row == 2


def test_header_only_csv_has_no_rows(tmp_path: Path) -> None:
    assert "contains no rows" in str(read_error(write(tmp_path / "batch.csv", "text,label\n")))


def test_jsonl_rows_are_lines_and_cells_become_strings(tmp_path: Path) -> None:
    path = write(
        tmp_path / "batch.jsonl",
        '{"text": "caf\\u00e9", "label": " Spam "}\n'
        "\n"
        '{"text": "café ✓", "label": 1}\n'
        '{"text": null, "label": null}\n'
        '{"text": "no label"}\n'
        '{"text": "half an emoji \\ud83d", "label": "ham"}\n',  # a lone surrogate: not valid Unicode
    )
    frame = read_batch(path)
    assert frame["text"].tolist() == ["café", "café ✓", "", "no label", "half an emoji \ufffd"]
    assert frame["label"].tolist() == ["spam", "1", "", "", "ham"]
    assert frame["row"].tolist() == [1, 3, 4, 5, 6]


def test_invalid_json_line_is_named(tmp_path: Path) -> None:
    error = read_error(write(tmp_path / "batch.jsonl", '{"text": "a", "label": "ham"}\n{"text": "b", label}\n'))
    assert error.row == 2 and "line 2 is not valid JSON" in str(error)


def test_jsonl_line_that_is_not_an_object(tmp_path: Path) -> None:
    error = read_error(write(tmp_path / "batch.ndjson", '{"text": "a", "label": "ham"}\n["b", "spam"]\n'))
    assert error.row == 2 and "is a JSON list, expected an object" in str(error)


# --- format detection -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("a.csv", "text,label\n", "csv"),
        ("a.TSV", "text\tlabel\n", "tsv"),
        ("a.jsonl", "{}", "jsonl"),
        ("a.ndjson", "{}", "jsonl"),
        ("a.mbox", "From x\n", "mbox"),
        ("a.tar.gz", b"", "email"),
        ("a.tgz", b"", "email"),
        ("a.tar", b"", "email"),
        ("received", "\n\nSPAM\tWin!\n", "sms"),
        ("received.txt", "From alice@example.org Mon Sep  2 10:00:00 2002\n", "mbox"),
        ("received.dat", '  {"text": "hi", "label": "ham"}\n', "jsonl"),
    ],
)
def test_detect_format(tmp_path: Path, name: str, content: str | bytes, expected: str) -> None:
    assert detect_format(write(tmp_path / name, content)) == expected


def test_detect_format_of_a_folder(tmp_path: Path) -> None:
    assert detect_format(tmp_path) == "email"


def test_unknown_format_says_what_was_tried(tmp_path: Path) -> None:
    error = read_error(write(tmp_path / "notes.txt", "text,label\nhi,ham\n"))
    for tried in ("sms", "mbox", "jsonl", "'text,label'", "SourceSpec.format"):
        assert tried in str(error)


def test_explicit_format_overrides_the_name(tmp_path: Path) -> None:
    frame = read_batch(write(tmp_path / "export.txt", "text,label\nhi,ham\n"), SourceSpec(format="csv"))
    assert frame["text"].tolist() == ["hi"]


def test_bad_spec_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown format 'xlsx'"):
        SourceSpec(format="xlsx")
    with pytest.raises(FileNotFoundError):
        read_batch(tmp_path / "nowhere.csv")
    error = read_error(tmp_path, SourceSpec(format="csv"))
    assert "is a folder" in str(error)


# --- e-mail messages ----------------------------------------------------------------------------------


def test_multipart_alternative_uses_the_plain_part() -> None:
    text = parse_message(MULTIPART_ALTERNATIVE).text
    assert text == "Café meeting\nLunch at the café at noon? It costs €5 and the walk is a bit long."


def test_base64_body_is_decoded() -> None:
    assert parse_message(BASE64_PLAIN).text == "Greetings\nGrüße aus Köln"


def test_latin1_charset_is_honoured() -> None:
    parsed = parse_message(LATIN1)
    assert parsed.text == "Dessert\nCrème brûlée for everyone." and parsed.charset_fallbacks == 0


def test_html_only_message_is_reduced_to_visible_text() -> None:
    text = parse_message(HTML_ONLY).text
    assert text == "You WON\nPrize\nWIN & SAVE\nOnly £5 today\nClaim now\nBye"


def test_bogus_charset_and_raw_8bit_subject_fall_back() -> None:
    parsed = parse_message(BOGUS_CHARSET)
    assert parsed.text == "Win £100 now\nCafé prize"
    assert parsed.charset_fallbacks == 2  # the subject's raw byte and the unknown body charset


def test_compat32_fallback_when_the_modern_parser_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(name: str, value: str):
        raise IndexError("modern header parser bug")

    monkeypatch.setattr(email_loader, "_parse_header", broken)
    parsed = parse_message(MULTIPART_ALTERNATIVE)
    assert parsed.compat32 and parsed.text.startswith("Café meeting\nLunch at the café")


def test_message_with_no_subject_or_body_is_empty_text() -> None:
    assert parse_message(b"From: a@example.org\nTo: b@example.org\n\n").text == ""


def test_not_mail_is_an_error_naming_the_file() -> None:
    with pytest.raises(BatchFormatError, match="notes.txt: is not an e-mail message"):
        parse_message(b"just some notes\nabout nothing\n", "notes.txt")


def test_html_to_text_drops_an_unclosed_trailing_tag() -> None:
    assert html_to_text('<p>a &lt; b</p><p>end <a href="http://x') == "a < b\nend"


# --- e-mail trees, archives, mbox -------------------------------------------------------------------


def test_email_tree_is_labelled_by_folder(tmp_path: Path) -> None:
    frame = read_batch(write_tree(tmp_path / "corpus"))
    assert frame["source"].tolist() == [
        "easy-ham-1/0001.eml",
        "hard-ham-1/sub/0001.eml",
        "spam-1/0001.eml",
        "spam-1/0002.eml",
    ]
    assert frame["label"].tolist() == ["ham", "ham", "spam", "spam"]
    assert frame["row"].tolist() == [1, 2, 3, 4]
    assert frame["text"].iloc[1] == "Dessert\nCrème brûlée for everyone."


def test_tar_archive_reads_like_the_tree(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "corpus")
    archive = write_tar(tree, tmp_path / "corpus.tar.gz")
    pd.testing.assert_frame_equal(read_batch(archive), read_batch(tree))


def test_tar_with_a_wrapping_folder(tmp_path: Path) -> None:
    archive = write_tar(write_tree(tmp_path / "corpus"), tmp_path / "batch.tgz", prefix="public/")
    frame = read_batch(archive)
    assert frame["source"].iloc[0] == "public/easy-ham-1/0001.eml"
    assert frame["label"].tolist() == ["ham", "ham", "spam", "spam"]


def test_folder_of_one_label_takes_its_own_name(tmp_path: Path) -> None:
    write(tmp_path / "spam-2" / "1.eml", HTML_ONLY)
    assert read_batch(tmp_path / "spam-2")["label"].tolist() == ["spam"]


def test_unlabelled_folders_are_named(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "corpus")
    write(tree / "misc" / "1.eml", LATIN1)
    write(tree / "inbox" / "2.eml", LATIN1)
    error = read_error(tree)
    assert "folders that are neither spam nor ham: inbox, misc" in str(error)


def test_email_tree_without_messages(tmp_path: Path) -> None:
    write(tmp_path / "spam-1" / ".hidden", "x")
    assert "contains no message files" in str(read_error(tmp_path))


def test_non_mail_file_in_a_tree_is_named(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "corpus")
    write(tree / "spam-1" / "0003.txt", "a shopping list\nmilk\n")
    error = read_error(tree)
    assert error.path == str(tree / "spam-1" / "0003.txt") and error.row == 5
    assert "is not an e-mail message" in str(error)


def test_binary_file_in_an_archive_is_named(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "corpus")
    write(tree / "spam-1" / "image.png", b"\x89PNG\r\n\x1a\n\x00\x00")
    error = read_error(write_tar(tree, tmp_path / "corpus.tar.gz"))
    assert "spam-1/image.png" in str(error) and "message file is binary" in str(error)


def test_corrupt_archive(tmp_path: Path) -> None:
    error = read_error(write(tmp_path / "corpus.tar.gz", b"\x1f\x8b\x08\x00 definitely not gzip"))
    assert "is not a readable tar archive" in str(error)


def mbox(*messages: bytes) -> bytes:
    return b"".join(b"From sender@example.org Mon Sep  2 10:00:00 2002\n" + m + b"\n" for m in messages)


def test_mbox_with_two_messages(tmp_path: Path) -> None:
    body = HEADERS.encode() + b"Subject: Archive\n\nLine one\n>From the archive, quoted\n"
    frame = read_batch(write(tmp_path / "ham-archive.mbox", mbox(LATIN1, body)))
    assert frame["text"].tolist() == [
        "Dessert\nCrème brûlée for everyone.",
        "Archive\nLine one\n>From the archive, quoted",
    ]
    assert frame["label"].tolist() == ["ham", "ham"]
    assert frame["source"].tolist() == ["ham-archive.mbox:1", "ham-archive.mbox:2"]


def test_mbox_label_needs_a_name_or_a_default(tmp_path: Path) -> None:
    path = write(tmp_path / "inbox.mbox", mbox(LATIN1, HTML_ONLY))
    assert "cannot tell whether this mbox holds spam or ham" in str(read_error(path))
    assert read_batch(path, SourceSpec(default_label="Spam"))["label"].tolist() == ["spam", "spam"]


def test_mbox_must_start_with_a_from_line(tmp_path: Path) -> None:
    error = read_error(write(tmp_path / "spam.mbox", LATIN1))
    assert "must start with a `From ` line" in str(error)


def test_mbox_message_that_is_not_mail_is_numbered(tmp_path: Path) -> None:
    error = read_error(write(tmp_path / "spam.mbox", mbox(LATIN1, b"hello\nworld\n")))
    assert error.row == 2 and "message 2" in str(error) and "is not an e-mail message" in str(error)


# --- feed mode -------------------------------------------------------------------------------------


def sms_source(path: Path, n: int = 24, reverse: bool = False) -> Path:
    lines = [f"{'spam' if i % 4 == 0 else 'ham'}\tmessage number {i}\n" for i in range(n)]
    lines.append(lines[3])  # an exact duplicate: the same row, emitted once
    return write(path, "".join(reversed(lines) if reverse else lines))


def test_feed_never_repeats_and_ends_with_none(tmp_path: Path) -> None:
    source = sms_source(tmp_path / "SMSSpamCollection")
    feed = Feed(source, tmp_path / "state", seed=7)
    assert feed.remaining() == 24
    batches = [feed.next(10), feed.next(10), feed.next(10)]
    assert [len(b) for b in batches] == [10, 10, 4]
    texts = [text for batch in batches for text in batch["text"]]
    assert len(set(texts)) == 24
    assert list(batches[0].columns) == list(COLUMNS)
    assert feed.next(10) is None and feed.remaining() == 0
    assert batches[0]["source"].iloc[0] != "SMSSpamCollection:1"  # sampled, not the head of the file


def test_feed_state_survives_restart_and_reordering(tmp_path: Path) -> None:
    source = sms_source(tmp_path / "SMSSpamCollection")
    first = Feed(source, tmp_path / "state", seed=1).next(5)
    # Same seed, fresh state: the same sample (the seed fixes the order).
    assert Feed(source, tmp_path / "other", seed=1).next(5).equals(first)
    # A restart over the reordered source carries on without repeats.
    sms_source(source, reverse=True)
    restarted = Feed(source, tmp_path / "state", seed=1)
    rest = restarted.next(100)
    assert len(rest) == 19 and not set(rest["text"]) & set(first["text"])
    state = json.loads((tmp_path / "state" / STATE_FILE).read_text())
    assert state["count"] == 24 and state["emitted"][0] == row_id(first["text"][0], first["label"][0])
    assert [p.name for p in (tmp_path / "state").iterdir()] == [STATE_FILE]  # no temp files left


def test_feed_seed_changes_the_sample(tmp_path: Path) -> None:
    source = sms_source(tmp_path / "SMSSpamCollection")
    a = Feed(source, tmp_path / "a", seed=1).next(5)["text"].tolist()
    b = Feed(source, tmp_path / "b", seed=2).next(5)["text"].tolist()
    assert a != b


def test_feed_refuses_a_corrupt_state(tmp_path: Path) -> None:
    write(tmp_path / "state" / STATE_FILE, "{not json")
    feed = Feed(sms_source(tmp_path / "SMSSpamCollection"), tmp_path / "state")
    with pytest.raises(ValueError, match="unreadable feed state"):
        feed.next(1)
    with pytest.raises(ValueError, match="at least 1"):
        feed.next(0)


def test_feed_batch_written_as_jsonl_is_an_ordinary_batch(tmp_path: Path) -> None:
    batch = Feed(sms_source(tmp_path / "SMSSpamCollection"), tmp_path / "state").next(3)
    batch.loc[0, "text"] = "Grüße £5 \u2028 ✓"
    path = write_jsonl(batch, tmp_path / "drop" / "feed-0001.jsonl")
    assert "Grüße £5" in path.read_text(encoding="utf-8")  # real UTF-8, not \u escapes
    again = read_batch(path)
    assert again[["text", "label"]].equals(batch[["text", "label"]])
    first = json.loads(path.read_text(encoding="utf-8").split("\n")[0])
    assert (first["origin"], first["source"]) == (batch["source"][0], "sms")  # where it sat; its source name
    assert again["source_name"].tolist() == ["sms"] * 3  # read back under the SMS file's source name, not jsonl


# --- the real corpora ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sms_corpus() -> pd.DataFrame:
    return read_batch(sms_or_skip())


@pytest.fixture(scope="module")
def spamassassin_corpus() -> pd.DataFrame:
    return read_batch(spamassassin_or_skip())  # about 4 s: the slowest test in this file


@pytest.mark.datasets
def test_real_sms_collection(sms_corpus: pd.DataFrame) -> None:
    assert len(sms_corpus) == 5574
    assert sms_corpus["label"].value_counts().to_dict() == {"ham": 4827, "spam": 747}
    assert sms_corpus["row"].tolist() == list(range(1, 5575))
    assert sms_corpus["text"].str.contains('"').sum() == 145  # quotes kept, never taken for quoting
    assert sms_corpus["text"].nunique() == 5171  # as the corpus README says


@pytest.mark.datasets
def test_real_spamassassin_corpus(spamassassin_corpus: pd.DataFrame) -> None:
    frame = spamassassin_corpus
    assert len(frame) == 6046
    assert frame["label"].value_counts().to_dict() == {"ham": 4150, "spam": 1896}
    folders = frame["source"].str.split("/").str[0].value_counts().to_dict()
    assert folders == {"easy-ham-1": 2500, "easy-ham-2": 1400, "hard-ham-1": 250, "spam-1": 500, "spam-2": 1396}
    assert (frame["text"].str.strip() == "").sum() <= 5
    assert frame["source"].is_unique


@pytest.mark.datasets
def test_real_html_only_spam_has_no_tags(spamassassin_corpus: pd.DataFrame) -> None:
    # Content-Type: text/html, quoted-printable, a table layout with comments and <META> tags.
    text = spamassassin_corpus.set_index("source").loc["spam-1/00001.7848dde101aa985090474a91ec93fcf0.txt", "text"]
    assert text.startswith("Life Insurance - Why Pay More?\nSave up to 70% on Life Insurance.")
    assert not TAG.search(text) and "=3D" not in text


# --- bad rows collected, limits while streaming, only regular files ------------------------------------


def test_read_batch_rows_collects_bad_lines_that_read_batch_raises(tmp_path: Path) -> None:
    path = write(tmp_path / "sms", b"ham\tok\nspam\tcaf\xe9 prize\nno tab\nham\tfine\n")
    read = read_batch_rows(path)
    assert read.table["row"].tolist() == [1, 4]
    assert [(p.row, p.source) for p in read.problems] == [(2, "sms:2"), (3, "sms:3")]
    assert "line 2 is not valid UTF-8" in read.problems[0].reason and str(path) in read.problems[0].reason
    assert "line 3 has no TAB" in read.problems[1].reason and read.problems[1].excerpt == "no tab"
    assert read_error(path).row == 2  # read_batch: the first bad row, as before


def test_csv_bad_line_counts_as_a_data_row(tmp_path: Path) -> None:
    path = write(tmp_path / "batch.csv", b"text,label\nok,ham\n\"caf\xe9\",spam\nalso ok,ham\n")
    read = read_batch_rows(path)
    assert read.table["row"].tolist() == [1, 3]
    (problem,) = read.problems
    assert problem.row == 2 and problem.source == "batch.csv:2" and "line 3 is not valid UTF-8" in problem.reason


def test_a_line_over_the_message_limit_is_skipped_and_the_next_read(tmp_path: Path) -> None:
    path = write(tmp_path / "sms", "ham\tshort\nspam\t" + "x" * 500 + "\nham\tafter\n")
    read = read_batch_rows(path, limits=Limits(message_bytes=100))
    assert read.table["text"].tolist() == ["short", "after"]
    (problem,) = read.problems
    assert problem.row == 2 and "line 2 is 506 B, over the limit of 100 B (set SPAM_MAX_MESSAGE_BYTES" in problem.reason


def test_a_csv_field_over_the_message_limit_refuses_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "batch.csv", 'text,label\n"' + "many short lines\n" * 20 + '",spam\n')
    with pytest.raises(LimitExceededError, match="SPAM_MAX_MESSAGE_BYTES"):
        read_batch(path, limits=Limits(message_bytes=100))


def test_reading_a_csv_leaves_the_process_wide_field_limit_as_it_was(tmp_path: Path) -> None:
    """csv.field_size_limit belongs to the process: a batch read with small limits must not shrink it for others."""
    import csv

    before = csv.field_size_limit()
    path = write(tmp_path / "batch.csv", 'text,label\n"' + "many short lines\n" * 20 + '",spam\n')
    with pytest.raises(LimitExceededError):
        read_batch(path, limits=Limits(message_bytes=100))
    read_batch(write(tmp_path / "ok.csv", "text,label\nhello,ham\n"), limits=Limits(message_bytes=200))
    assert csv.field_size_limit() == before


def test_a_file_over_the_file_limit_is_refused_before_reading(tmp_path: Path) -> None:
    path = write(tmp_path / "sms", "ham\thello\n" * 110)  # 1,100 bytes
    with pytest.raises(LimitExceededError, match=r"the file is 1\.07 KiB, over the limit of 1 KiB"):
        read_batch(path, limits=Limits(file_bytes=1024))


def test_an_oversized_mail_file_in_a_tree_is_a_bad_row(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "mail")
    write(root / "spam-1" / "0003.eml", HEADERS + "Subject: big\n\n" + "y" * 5000 + "\n")
    read = read_batch_rows(root, limits=Limits(member_bytes=4096))
    assert [p.source for p in read.problems] == ["spam-1/0003.eml"]
    assert "the message file is larger than 4 KiB" in read.problems[0].reason
    assert len(read.table) == 4


def test_mbox_message_over_the_member_limit_is_a_bad_row(tmp_path: Path) -> None:
    path = write(tmp_path / "spam.mbox", b"From x\n" + LATIN1 + b"From y\n" + HTML_ONLY + b"x" * 3000 + b"\n")
    read = read_batch_rows(path, limits=Limits(member_bytes=2048))
    assert [p.row for p in read.problems] == [2] and "over the limit of 2 KiB" in read.problems[0].reason


@pytest.mark.parametrize("name", ["sms", "batch.csv", "mail"])
def test_a_symlinked_batch_is_refused_unread(tmp_path: Path, name: str) -> None:
    target = write_tree(tmp_path / "real") if name == "mail" else write(tmp_path / f"real-{name}", "ham\thi\n")
    (tmp_path / name).symlink_to(target)
    with pytest.raises(RefusedEntryError, match="is a symbolic link"):
        read_batch(tmp_path / name)


def test_limits_defaults_and_environment() -> None:
    assert Limits.from_env({}) == Limits()
    assert Limits().message_bytes == 1 << 20 and Limits().compression_ratio == 100
    custom = Limits.from_env({"SPAM_MAX_MEMBER_BYTES": "2M", "SPAM_MAX_COMPRESSION_RATIO": "20"})
    assert custom.member_bytes == 2 << 20 and custom.compression_ratio == 20.0
    with pytest.raises(ValueError, match="SPAM_MAX_COMPRESSION_RATIO='0.5' is not a ratio of at least 1"):
        Limits.from_env({"SPAM_MAX_COMPRESSION_RATIO": "0.5"})


# --- source names ----------------------------------------------------------------------------------


def test_each_row_gets_a_source_name_from_the_batch_its_column_or_its_format(tmp_path: Path) -> None:
    sms = sms_source(tmp_path / "SMSSpamCollection")
    assert set(read_batch(sms)["source_name"]) == {"sms"}
    assert set(read_batch(sms, SourceSpec(source="carrier.b"))["source_name"]) == {"carrier.b"}
    table = tmp_path / "t.csv"
    table.write_text("text,label,source\nhello there my friend,ham, Enron \nwin a prize today,spam,\n", encoding="utf-8")
    assert read_batch(table)["source_name"].tolist() == ["enron", "csv"]  # case-folded; an empty cell: the default
    assert read_batch(table, SourceSpec(source="web"))["source_name"].tolist() == ["web", "web"]  # the flag wins
    assert read_batch(table, SourceSpec(source_column="nope"))["source_name"].tolist() == ["csv", "csv"]
    lines = tmp_path / "t.jsonl"
    lines.write_text('{"text": "see you at six", "label": "ham", "source": "chat"}\n{"text": "cheap meds", "label": "spam"}\n')
    assert read_batch(lines)["source_name"].tolist() == ["chat", "jsonl"]


def test_a_cell_that_is_no_source_name_is_a_bad_row_naming_column_and_row(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("text,label,source\nhello there my friend,ham,sms\nwin a prize,spam,my inbox!\n", encoding="utf-8")
    read = read_batch_rows(table)
    assert read.table["text"].tolist() == ["hello there my friend"]
    (problem,) = read.problems
    assert problem.row == 2 and "t.csv, row 2: column 'source': 'my inbox!' is not a source name" in problem.reason
    with pytest.raises(BatchFormatError, match="column 'source'"):
        read_batch(table)


@pytest.mark.parametrize("name", ["", "Sms", "a b", "-x", "x" * 33, "é"])
def test_a_source_spec_refuses_names_that_are_no_source_names(name: str) -> None:
    with pytest.raises(ValueError, match="source: .* is not a source name"):
        SourceSpec(source=name)
