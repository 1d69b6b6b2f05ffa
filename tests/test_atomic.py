import os

import pandas as pd
import pytest

from tmln import atomic


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_replace_existing_and_no_temp_left(tmp_path):
    target = tmp_path / "t.json"
    atomic.write_json(target, {"b": 1, "a": [1.5]})
    atomic.write_json(target, {"b": 2})
    assert target.read_text() == '{\n  "b": 2\n}\n'
    assert os.listdir(tmp_path) == ["t.json"]


def test_csv_is_byte_stable(tmp_path):
    df = pd.DataFrame({"x": [0.1 + 0.2, 1 / 3], "n": [1, 2]})
    atomic.write_csv(tmp_path / "a.csv", df)
    atomic.write_csv(tmp_path / "b.csv", df.copy())
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.csv").read_text().splitlines()[1] == "0.3,1"


def test_outputs_get_umask_permissions(tmp_path):
    import stat

    atomic.write_text(tmp_path / "p.txt", "x")
    mode = stat.S_IMODE((tmp_path / "p.txt").stat().st_mode)
    assert mode == 0o666 & ~atomic._UMASK


def test_remove_stale_temporaries(tmp_path):
    (tmp_path / ".nodes.x1.tmp.csv").write_text("half")
    (tmp_path / "nodes.csv").write_text("whole")
    removed = atomic.remove_stale_temporaries(tmp_path)
    assert [p.name for p in removed] == [".nodes.x1.tmp.csv"]
    assert os.listdir(tmp_path) == ["nodes.csv"]
