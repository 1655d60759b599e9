"""records.py: append-only JSONL survives a killed writer."""

from kinetics_prep.records import RecordWriter, iter_records, read_latest


def test_last_record_per_key_wins(tmp_path):
    path = tmp_path / "r.jsonl"
    with RecordWriter(path) as writer:
        writer.write({"clip_id": "a", "status": "failed"})
        writer.write({"clip_id": "b", "status": "ok"})
        writer.write({"clip_id": "a", "status": "ok"})
    latest = read_latest(path)
    assert list(latest) == ["a", "b"]
    assert latest["a"]["status"] == "ok"


def test_truncated_tail_is_skipped_and_next_record_starts_clean(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"clip_id": "a", "status": "ok"}\n{"clip_id": "b", "sta')
    assert [r["clip_id"] for r in iter_records(path)] == ["a"]
    with RecordWriter(path) as writer:
        writer.write({"clip_id": "b", "status": "ok"})
    assert read_latest(path)["b"]["status"] == "ok"
    assert [r["clip_id"] for r in iter_records(path)] == ["a", "b"]


def test_missing_file_reads_as_empty(tmp_path):
    assert read_latest(tmp_path / "none.jsonl") == {}
