import pandas as pd
import pytest

from spam_assets.batches import BatchStore, content_hash
from spam_assets.loaders import Problem, RefusedEntryError, SourceSpec
from spam_assets.validation import BatchRules, accepted, judge, rejection_reason, validate


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


# --- the batch policy ----------------------------------------------------------------------------------


def test_quarantine_sets_bad_rows_aside_and_keeps_the_rest():
    rows = [(f"message {i}", "ham") for i in range(38)] + [("", "spam"), ("fine", "maybe")]
    problems = [Problem(41, "f:41", "f, row 41: line 41 is not valid JSON", '{"text": oops')]
    verdict = judge(table(rows), None, BatchRules(max_quarantined_share=0.1), problems)
    assert verdict.accepted
    assert len(verdict.kept) == 38 and "" not in verdict.kept["text"].tolist()
    assert [(q["row"], q["reason"]) for q in verdict.quarantined] == [
        (39, "empty text"),
        (40, "label 'maybe' is not one of ['ham', 'spam']"),
        (41, "f, row 41: line 41 is not valid JSON"),
    ]
    outcomes = {o.name: o for o in verdict.outcomes}
    assert outcomes["batch_schema"].rows == [40, 41] and "quarantined" in outcomes["batch_schema"].description
    assert outcomes["batch_min_rows"].description == "38 rows kept (minimum 10)"


def test_quarantine_ceiling_rejects_a_mostly_bad_batch():
    rows = [(f"message {i}", "ham") for i in range(30)] + [("", "spam")] * 3
    verdict = judge(table(rows), None, BatchRules(max_quarantined_share=0.05))
    assert not verdict.accepted
    assert "9.1% of 33 rows bad; at most 5% may be quarantined" in rejection_reason(verdict.outcomes)


def test_reject_policy_rejects_for_one_bad_row_and_names_the_file():
    rows = [(f"message {i}", "ham") for i in range(30)]
    problems = [Problem(31, "f:31", "f, row 31: line 31 has no TAB")]
    verdict = judge(table(rows), None, BatchRules(policy="reject"), problems)
    assert not verdict.accepted and verdict.quarantined == []
    assert "line 31 has no TAB" in rejection_reason(verdict.outcomes)
    empty = judge(table(rows + [("", "ham")]), None, BatchRules(policy="reject"))
    assert "1 empty texts in f" in rejection_reason(empty.outcomes)


def test_policy_and_shares_are_checked():
    with pytest.raises(ValueError, match="unknown batch policy 'drop'"):
        BatchRules(policy="drop")
    with pytest.raises(ValueError, match="max_quarantined_share must be a share between 0 and 1"):
        BatchRules(max_quarantined_share=5)


def test_quarantined_rows_are_kept_with_the_batch(tmp_path):
    store = BatchStore(tmp_path / "batches")
    source = tmp_path / "a.tsv"
    source.write_text("ham\thello\n")
    batch_id = store.stage(source)
    rows = [{"row": 2, "source": "a.tsv:2", "reason": "empty text", "label": "ham", "text": "é"}]
    store.write_quarantine(batch_id, rows)
    assert store.quarantined(batch_id) == rows


def test_stage_refuses_a_symlink_and_leaves_nothing(tmp_path):
    store = BatchStore(tmp_path / "batches")
    target = tmp_path / "a.tsv"
    target.write_text("ham\thello\n")
    (tmp_path / "link.tsv").symlink_to(target)
    with pytest.raises(RefusedEntryError, match="link.tsv: is a symbolic link"):
        store.stage(tmp_path / "link.tsv")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        store.stage(tmp_path / "missing.tsv")
    assert store.ids() == [] and not store.root.exists()  # refused before anything was created


def test_a_batch_stored_before_source_names_reads_as_its_default(tmp_path):
    """Homes from before: meta.json without `source`, parsed.parquet without source_name."""
    store = BatchStore(tmp_path / "batches")
    sms, mail = tmp_path / "old.txt", tmp_path / "old.mbox"
    sms.write_text("ham\thello\nspam\twin cash\n")
    mail.write_text("From a@b Mon Jan  1 00:00:00 2024\nSubject: hi\n\nhello\n")
    named = tmp_path / "named.txt"
    named.write_text("ham\tanother one\n")
    ids = [store.stage(sms), store.stage(mail, SourceSpec("mbox")), store.stage(named, SourceSpec(source="carrier"))]
    for batch_id in ids:
        meta = store.meta(batch_id)
        if batch_id != ids[2]:
            meta["spec"] = {k: v for k, v in meta["spec"].items() if k not in ("source", "source_column")}
            (store.folder(batch_id) / "meta.json").write_text(__import__("json").dumps(meta))
        store.write_parsed(batch_id, pd.DataFrame({"text": ["x"], "label": ["ham"], "source": ["f:1"], "row": [1]}))
    assert [store.read_parsed(b)["source_name"].tolist() for b in ids] == [["sms"], ["email"], ["carrier"]]
