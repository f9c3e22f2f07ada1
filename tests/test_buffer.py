from pfrl.buffer import ReplayBuffer
from pfrl.config import BufferSection
from pfrl.types import PreferencePair


def pair(i: int, version: int, prompt: str = "p") -> PreferencePair:
    return PreferencePair(prompt_id=f"id{i}", prompt=prompt, chosen=f"good{i}", rejected=f"bad{i}", policy_version=version)


def test_fifo_take_removes_in_arrival_order():
    buf = ReplayBuffer(BufferSection(capacity=10, max_policy_lag=5))
    buf.add([pair(i, 0) for i in range(4)], current_version=0)
    assert [p.prompt_id for p in buf.take(3, 0)] == ["id0", "id1", "id2"]
    assert len(buf) == 1


def test_freshest_prefers_newest_version_then_newest_arrival():
    buf = ReplayBuffer(BufferSection(capacity=10, max_policy_lag=5, sampling="freshest"))
    buf.add([pair(0, 1), pair(1, 2), pair(2, 1), pair(3, 2)], current_version=2)
    assert [p.prompt_id for p in buf.take(4, 2)] == ["id3", "id1", "id2", "id0"]


def test_stale_pairs_are_dropped_and_reported():
    buf = ReplayBuffer(BufferSection(capacity=10, max_policy_lag=1))
    buf.add([pair(0, 0), pair(1, 1), pair(2, 2)], current_version=2)  # id0 stale on arrival
    assert len(buf) == 2
    taken = buf.take(10, current_version=3)  # id1 now lags 2 > 1
    assert [p.prompt_id for p in taken] == ["id2"]
    dropped = buf.take_dropped()
    assert sorted((p.prompt_id, why) for p, why in dropped) == [("id0", "stale"), ("id1", "stale")]
    assert buf.stats()["buffer/dropped_stale"] == 2
    assert buf.take_dropped() == []


def test_lag_zero_is_lockstep():
    buf = ReplayBuffer(BufferSection(capacity=10, max_policy_lag=0))
    buf.add([pair(0, 4)], current_version=4)
    assert len(buf.take(1, current_version=5)) == 0


def test_capacity_evicts_oldest():
    buf = ReplayBuffer(BufferSection(capacity=3, max_policy_lag=9))
    buf.add([pair(i, 0) for i in range(5)], current_version=0)
    assert [p.prompt_id for p in buf.take(5, 0)] == ["id2", "id3", "id4"]
    assert buf.drops["evicted"] == 2


def test_dedupe_in_buffer_and_after_serving():
    buf = ReplayBuffer(BufferSection(capacity=10, max_policy_lag=9))
    assert buf.add([pair(0, 0), pair(0, 0)], 0) == 1
    buf.take(1, 0)
    assert buf.add([pair(0, 1)], 1) == 0
    assert buf.drops["duplicate"] == 2


def test_state_round_trip():
    cfg = BufferSection(capacity=10, max_policy_lag=2)
    buf = ReplayBuffer(cfg)
    buf.add([pair(i, i % 2) for i in range(5)], current_version=1)
    buf.take(2, 1)
    clone = ReplayBuffer(cfg)
    clone.load_state_dict(buf.state_dict())
    assert clone.take(10, 1) == buf.take(10, 1)
    assert clone.add([pair(0, 1)], 1) == 0  # remembers what was served
