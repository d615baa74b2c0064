import pytest

from ctloop.objectstore import LocalStore, StoreError, open_uri


def test_local_store_lists_sorted_with_content_etags(tmp_path):
    store = LocalStore(tmp_path)
    store.put("data/b.csv", b"2")
    store.put("data/a.csv", b"1")
    store.put("other/c.csv", b"3")
    listed = store.list("data/")
    assert [o.key for o in listed] == ["data/a.csv", "data/b.csv"]
    before = listed[0].etag
    store.put("data/a.csv", b"changed")
    assert store.list("data/")[0].etag != before


def test_uri_round_trips_through_open_uri(tmp_path):
    store = LocalStore(tmp_path)
    uri = store.put("x/y.parquet", b"abc")
    again, key = open_uri(uri)
    assert again.get(key) == b"abc"
    assert again.uri(key) == uri


def test_bare_paths_and_prefixes_are_local(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.csv").write_bytes(b"1")
    store, prefix = open_uri(str(tmp_path / "d") + "/")
    assert [o.key.rsplit("/", 1)[-1] for o in store.list(prefix)] == ["f.csv"]


@pytest.mark.parametrize("key", ["../etc/passwd", "a/../../b", "/abs", "nul\x00byte"])
def test_keys_that_escape_are_rejected(tmp_path, key):
    with pytest.raises(StoreError, match="invalid object key"):
        LocalStore(tmp_path).put(key, b"x")


def test_missing_object_and_unknown_scheme_are_clear_errors(tmp_path):
    with pytest.raises(StoreError, match="no such object"):
        LocalStore(tmp_path).get("nope.csv")
    with pytest.raises(StoreError, match="unsupported URI scheme 'gs'"):
        open_uri("gs://bucket/x")


def test_a_missing_prefix_lists_nothing_without_walking_its_parent(tmp_path):
    store = LocalStore(tmp_path)
    store.put("sibling/f.csv", b"1")
    assert store.list("missing/") == []
    assert store.list("missing/deeper/") == []


def test_a_partial_name_prefix_matches_siblings(tmp_path):
    store = LocalStore(tmp_path)
    store.put("data/2026-01/a.csv", b"1")
    store.put("data/2026-02/b.csv", b"2")
    store.put("data/2025-12/c.csv", b"3")
    assert [o.key for o in store.list("data/2026-")] == ["data/2026-01/a.csv", "data/2026-02/b.csv"]
