"""When a slide is done: the parameter hash and the state check."""

from tmln.cohort.state import is_done, params_hash


def test_params_hash_and_is_done():
    h = params_hash({"a": 1, "b": [1, 2]})
    assert h == params_hash({"b": [1, 2], "a": 1}) != params_hash({"a": 2, "b": [1, 2]})
    s = {"status": "done", "params_hash": h}
    assert is_done(s, h) and not is_done(s, "other") and not is_done({**s, "status": "failed"}, h)
    assert not is_done(None, h)
