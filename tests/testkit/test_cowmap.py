"""dance.zone.cowmap.CowMap against a dict model: every operation, and copies that never change
the map they were made from (a served snapshot must not move under its readers)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dance.zone.cowmap import CowMap

_ops = st.lists(
    st.tuples(st.sampled_from(["set", "del", "pop", "copy"]), st.integers(0, 600), st.integers()),
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.integers(0, 600), st.integers(), max_size=300), _ops)
def test_behaves_like_a_dict_and_copies_are_independent(start: dict[int, int], ops: list) -> None:
    cow: CowMap[int, int] = CowMap(start)
    model = dict(start)
    frozen: list[tuple[CowMap[int, int], dict[int, int]]] = []
    for op, key, value in ops:
        if op == "set":
            cow[key] = value
            model[key] = value
        elif op == "del":
            if key in model:
                del cow[key]
                del model[key]
            else:
                try:
                    del cow[key]
                except KeyError:
                    pass
                else:
                    raise AssertionError("deleted a missing key")
        elif op == "pop":
            assert cow.pop(key, None) == model.pop(key, None)
        else:  # the old map is kept (a served snapshot); work goes on in the copy
            frozen.append((cow, dict(model)))
            cow = CowMap.of(cow)
        assert len(cow) == len(model)
    assert dict(cow.items()) == model
    assert sorted(cow) == sorted(model)
    for key in range(0, 601, 7):
        assert (key in cow) == (key in model)
        assert cow.get(key) == model.get(key)
    for old, snapshot in frozen:  # never changed by the writes to later copies
        assert dict(old.items()) == snapshot and len(old) == len(snapshot)


def test_of_copies_a_plain_mapping() -> None:
    plain = {"a": 1, "b": 2}
    cow = CowMap.of(plain)
    cow["c"] = 3
    assert plain == {"a": 1, "b": 2} and dict(cow.items()) == {"a": 1, "b": 2, "c": 3}
