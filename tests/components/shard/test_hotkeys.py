"""Space-Saving: heavy hitters found in bounded memory, with honest bounds."""

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from components.shard.hotkeys import SpaceSaving


def test_a_celebrity_among_many_cold_keys_is_found():
    sketch = SpaceSaving(capacity=8)
    for i in range(5000):
        sketch.add("celebrity" if i % 4 == 0 else i)
    key, count, at_least = sketch.top(1)[0]
    assert key == "celebrity" and at_least <= 1250 <= count
    assert len(sketch.top(100)) == 8  # memory stays bounded


@settings(max_examples=100, deadline=None)
@given(stream=st.lists(st.integers(0, 30), max_size=400), capacity=st.integers(1, 12))
def test_bounds_hold_and_frequent_keys_are_kept(stream, capacity):
    sketch = SpaceSaving(capacity)
    for key in stream:
        sketch.add(key)
    truth = Counter(stream)
    kept = {key: (count, low) for key, count, low in sketch.top(capacity)}
    for key, (count, low) in kept.items():
        assert low <= truth[key] <= count
    for key, n in truth.items():
        if n > len(stream) / capacity:
            assert key in kept, (key, n)
