import pandas as pd

from spam_assets.batches import BatchStore, content_hash
from spam_assets.loaders import SourceSpec
from spam_assets.validation import accepted, rejection_reason, validate


def test_stage_is_content_addressed_and_idempotent(tmp_path):
    store = BatchStore(tmp_path / "batches")
    a = tmp_path / "a.tsv"
    a.write_text("ham\thello\n")
    first = store.stage(a, SourceSpec("sms"))
    again = store.stage(a)
    assert first == again == content_hash(a)[:16]
    assert store.received_path(first).read_bytes() == a.read_bytes()
    assert store.spec(first).format == "sms"
    b = tmp_path / "b.tsv"
    b.write_text("ham\thello!\n")
    assert store.stage(b) != first
    assert store.ids() == [first, store.stage(b)]


def test_folder_hash_covers_names_and_bytes(tmp_path):
    (tmp_path / "x" / "spam").mkdir(parents=True)
    (tmp_path / "x" / "spam" / "1").write_text("a")
    before = content_hash(tmp_path / "x")
    (tmp_path / "x" / "spam" / "1").rename(tmp_path / "x" / "spam" / "2")
    assert content_hash(tmp_path / "x") != before


def table(records):
    return pd.DataFrame([{"text": t, "label": l, "source": "f", "row": i + 1} for i, (t, l) in enumerate(records)])


def test_validation_names_rows_and_reasons():
    outcomes = {o.name: o for o in validate(table([("hi", "ham"), ("", "spam"), ("x", "maybe")] * 4), None)}
    assert not outcomes["batch_schema"].passed
    assert "'maybe'" in outcomes["batch_schema"].description
    assert outcomes["batch_schema"].rows[:2] == [3, 6]
    assert not outcomes["batch_empty_texts"].passed
    assert outcomes["batch_empty_texts"].rows[0] == 2


def test_parse_error_fails_every_blocking_check():
    outcomes = validate(None, "line 3: no TAB")
    assert not accepted(outcomes)
    assert rejection_reason(outcomes) == "batch_schema: line 3: no TAB"


def test_duplicates_only_warn():
    outcomes = validate(table([("same", "ham")] * 20), None)
    dup = next(o for o in outcomes if o.name == "batch_duplicate_share")
    assert not dup.passed and not dup.blocking
    assert accepted(outcomes)
