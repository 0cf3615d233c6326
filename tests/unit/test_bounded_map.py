from sba_api.bounded_map import BoundedMap


def test_the_oldest_entry_goes_first_and_a_rewrite_makes_it_new() -> None:
    remembered = BoundedMap[str, int](2)
    remembered.put("a", 1)
    remembered.put("b", 2)
    remembered.put("a", 3)  # a is now the newest
    remembered.put("c", 4)
    assert remembered.get("b") is None
    assert (remembered.get("a"), remembered.get("c"), len(remembered)) == (3, 4, 2)
