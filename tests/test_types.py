import pytest

from pfrl.types import LabelledGroup, PreferencePair, Problem, PromptItem, RolloutGroup, decode, encode


def test_messages_round_trip_through_msgpack():
    item = PromptItem(Problem(id="a", prompt="q", answer="1", test_inputs=["[1]"]), iteration=2, attempt=1)
    group = RolloutGroup(item, ["x", "y"], [[1], [2, 3]], ["stop", "length"], 4, 3, policy_version=7)
    labelled = LabelledGroup("a", 2, 7, "1", [1.0, 0.0], [(0, 1)], vote_share=0.5)
    pair = PreferencePair("a", "q", "x", "y", 7)
    assert decode(encode([group, labelled, pair])) == [group, labelled, pair]
    assert decode(encode(labelled)).pairs == [(0, 1)]


def test_unknown_type_fails_loudly():
    import msgpack

    with pytest.raises(ValueError, match="unknown message type"):
        decode(msgpack.packb({"__t": "Pickle", "x": 1}))
