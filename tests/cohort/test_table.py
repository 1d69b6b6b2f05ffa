import pytest

from tmln.cohort.table import read_slides_table
from tmln.errors import InputTableError


def write(tmp_path, text, name="slides.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_relative_paths_ids_and_mpp(tmp_path):
    (tmp_path / "sub").mkdir()
    p = write(tmp_path / "sub", "slide_path,patient_id,mpp\nA.svs,007,\n../B.tiff,008,0.25\n")
    a, b = read_slides_table(p, mpp=0.5)
    assert a.path == (tmp_path / "sub" / "A.svs").resolve() and a.slide_id == "A"
    assert a.patient_id == "007"  # not 7
    assert a.mpp == 0.5 and b.mpp == 0.25  # the row's value wins over the run-wide one
    assert b.path == (tmp_path / "B.tiff").resolve()
    assert a.error is None and b.error is None


def test_missing_columns_and_empty_table_raise(tmp_path):
    with pytest.raises(InputTableError, match="missing column.*patient_id"):
        read_slides_table(write(tmp_path, "slide_path,patient\nA.svs,1\n"))
    with pytest.raises(InputTableError, match="no rows"):
        read_slides_table(write(tmp_path, "slide_path,patient_id\n"))
    with pytest.raises(InputTableError, match="not found"):
        read_slides_table(tmp_path / "nope.csv")


def test_row_problems_are_kept_on_rows(tmp_path):
    p = write(tmp_path, "slide_path,patient_id,mpp\nA.svs,1,\nA.svs,1,\nB.svs,,\nC.svs,3,abc\nx/C.svs,4,\n"
                        "D.svs,5,-1\n")
    rows = read_slides_table(p)
    assert rows[0].error is None
    assert "listed twice" in rows[1].error and "rows 1 and 2" in rows[1].error
    assert "empty patient_id" in rows[2].error
    assert "not a positive number" in rows[3].error
    assert "already used by row 4" in rows[4].error
    assert "not a positive number" in rows[5].error


def test_slide_listed_for_two_patients_fails_both(tmp_path):
    rows = read_slides_table(write(tmp_path, "slide_path,patient_id\nA.svs,1\nA.svs,2\n"))
    assert "different patients" in rows[0].error
    assert "listed twice" in rows[1].error
