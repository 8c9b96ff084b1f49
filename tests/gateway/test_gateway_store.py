"""The gateway's store forgets only what its configuration says, and says what it dropped."""

import sqlite3
import time

from govedge.gateway.admit import SeqState
from govedge.gateway.health import snapshot
from govedge.gateway.store import Store


def _fill(store, n):
    with store:
        ids = [store.add_reading("esp32-0001", i, "reading", 1764300000 + i, b"m%d" % i) for i in range(n)]
    return ids


def test_held_back_values_are_forgotten_after_their_time_and_not_before(tmp_path):
    store = Store(tmp_path / "gateway.db")
    ids = _fill(store, 3)
    with store:
        for i in ids:
            store.hold_back(i, "temp", "spike", "temp 84.9 Cel is a spike")
        store.db.execute("UPDATE held_back SET held_at = held_at - 31 * 86400 WHERE reading_id = ?", (ids[0],))
        assert store.forget_held_back(time.time() - 30 * 86400) == 1
    assert snapshot(tmp_path / "gateway.db")["held_back"] == 2


def test_unsent_readings_past_the_age_limit_go_with_their_whole_batch_and_move_the_cursor(tmp_path):
    store = Store(tmp_path / "gateway.db")
    ids = _fill(store, 6)
    with store:
        store.add_batch(0, store.unbatched(2), b"r" * 32, b"c0", b"h0")
        store.add_batch(1, store.unbatched(2), b"r" * 32, b"c1", b"h1")
        store.advance("hub", 0)  # batch 0 is delivered
        store.db.execute("UPDATE readings SET received_at = received_at - 100 * 86400 WHERE id IN (?, ?, ?)",
                         (ids[0], ids[2], ids[4]))
        dropped = store.drop_unsent_older_than("hub", time.time() - 90 * 86400)
    # batch 1 holds an old reading: it goes whole (2 readings, both counted); reading 4 was
    # unbatched; batch 0 was delivered and stays
    assert dropped == 3
    assert store.cursor("hub") == 1
    assert [b.seq for b in store.batches_after(-1, 10)] == [0]
    assert [r.seq for r in store.unbatched(10)] == [5]


def test_last_sequence_number_is_written_at_commit_and_not_on_rollback(tmp_path):
    store = Store(tmp_path / "gateway.db")
    with store:
        for seq in (3, 7, 5):
            store.add_reading("esp32-0001", seq, "reading", None, b"m%d" % seq)
        assert store.last_seq("esp32-0001") == 7  # seen inside the transaction already
    try:
        with store:
            store.add_reading("esp32-0001", 9, "reading", None, b"m9")
            raise RuntimeError("power cut")
    except RuntimeError:
        pass
    assert store.last_seq("esp32-0001") == 7
    store.close()
    assert Store(tmp_path / "gateway.db").last_seq("esp32-0001") == 7


def test_the_replay_window_is_kept_with_the_commit_and_a_store_from_before_windows_is_migrated(tmp_path):
    path = tmp_path / "gateway.db"
    db = sqlite3.connect(path)  # the devices table of a store from before the replay window
    db.execute("CREATE TABLE devices (device_id TEXT PRIMARY KEY, last_seq INTEGER NOT NULL)")
    db.execute("INSERT INTO devices VALUES ('esp32-0001', 50)")
    db.commit()
    db.close()
    store = Store(path)
    assert store.seq_state("esp32-0001") == SeqState(50)  # all it accepted counts as all below 50
    assert store.seq_state("esp32-0002") is None
    with store:
        store.note_window("esp32-0001", SeqState(50).taking(60))
        store.note_window("esp32-0002 k2", SeqState.first(3).taking(9))
    try:
        with store:
            store.note_window("esp32-0001", SeqState(60, ((51, 59),)).taking(55))
            raise RuntimeError("power cut")
    except RuntimeError:
        pass
    store.close()
    store = Store(path)
    assert store.seq_state("esp32-0001") == SeqState(60, ((51, 59),))
    assert store.seq_state("esp32-0002 k2") == SeqState(9, ((0, 2), (4, 8)))
    assert store.last_seq("esp32-0001") == 60


def test_a_batch_must_be_the_oldest_unbatched_readings(tmp_path):
    store = Store(tmp_path / "gateway.db")
    _fill(store, 4)
    newest_two = store.unbatched(4)[2:]
    try:
        with store:
            store.add_batch(0, newest_two, b"r" * 32, b"c0", b"h0")
    except RuntimeError as exc:
        assert "rows must be the oldest unbatched ones" in str(exc)
    else:
        raise AssertionError("a batch that skips older readings was recorded")
    assert store.count_unbatched() == 4 and store.next_batch_seq() == 0  # rolled back whole


def test_batch_sequence_numbers_never_go_back_when_batches_are_dropped(tmp_path):
    # the receivers drop a batch whose id they have seen: an id must never come again
    store = Store(tmp_path / "gateway.db")
    _fill(store, 4)
    with store:
        for seq in (0, 1):
            store.add_batch(store.next_batch_seq(), store.unbatched(2), b"r" * 32, b"c%d" % seq, b"h")
        assert store.drop_oldest_unsent("hub", 10) == (2, 4)  # the quota took every batch
    assert store.next_batch_seq() == 2
    store.close()
    assert Store(tmp_path / "gateway.db").next_batch_seq() == 2


def test_an_outage_longer_than_the_age_limit_drops_more_readings_than_one_sql_statement_can_name(tmp_path):
    store = Store(tmp_path / "gateway.db")
    # SQLite's default limit of variables in one statement (SQLITE_MAX_VARIABLE_NUMBER; Debian's build
    # raises it to 250000, others do not): a list of 40,000 ids cannot be bound
    store.db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 32766)
    n = 40_000
    with store:
        store.db.executemany("INSERT INTO readings (device_id, seq, kind, node_time, received_at, message) "
                             "VALUES ('esp32-0001', ?, 'reading', NULL, ?, x'00')",
                             [(i, time.time() - 100 * 86400) for i in range(n)])
        store.add_batch(0, store.unbatched(500), b"r" * 32, b"c0", b"h0")
        dropped = store.drop_unsent_older_than("hub", time.time() - 90 * 86400)
    assert dropped == n
    assert store.cursor("hub") == 0
    assert store.db.execute("SELECT count(*) FROM readings").fetchone()[0] == 0


def test_a_store_has_one_random_id_for_its_life_and_a_store_from_before_store_ids_gets_one(tmp_path):
    from govedge.core.batch import STORE_ID

    first = Store(tmp_path / "a" / "gateway.db")
    again = Store(tmp_path / "a" / "gateway.db")  # a second connection, as the uplink opens it
    other = Store(tmp_path / "b" / "gateway.db")  # a replaced SD card
    assert STORE_ID.fullmatch(first.store_id) and first.store_id == again.store_id != other.store_id
    for s in (first, again, other):
        s.close()
    # a store as the version before store ids left it: its batches numbered on, an id made on the first open
    old = Store(tmp_path / "old" / "gateway.db")
    _fill(old, 2)
    with old:
        old.add_batch(0, old.unbatched(2), b"r" * 32, b"c0", b"h0")
        old.db.execute("DELETE FROM sequences WHERE name = 'store'")
    old.close()
    migrated = Store(tmp_path / "old" / "gateway.db")
    assert STORE_ID.fullmatch(migrated.store_id) and migrated.next_batch_seq() == 1
    assert Store(tmp_path / "old" / "gateway.db").store_id == migrated.store_id
