"""The slides table (slides.csv input): ``slide_path``, ``patient_id``, optional ``mpp``.

Relative slide paths are relative to the CSV's folder. Problems with the whole table (missing file,
missing columns, no rows) raise ``InputTableError``; problems with one row (empty patient, bad mpp,
a slide listed twice, two slides with the same file stem) are kept on that row (``SlideEntry.error``)
so the run reports them as failed slides and carries on with the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from tmln.atomic import write_csv
from tmln.errors import InputTableError

REQUIRED_COLUMNS = ("slide_path", "patient_id")
OPTIONAL_COLUMNS = ("mpp",)


@dataclass(frozen=True)
class SlideEntry:
    """One row of the slides table.

    row : 1-based data row number (the CSV line is ``row + 1``).
    slide_id : the slide file's stem; names its folder ``slides/<slide_id>/`` in the run directory.
    path : the slide file (absolute). slide_path : as written in the table.
    mpp : µm/px override for this slide (the ``mpp`` column, else the run-wide ``mpp``), or None.
    error : why this row cannot be processed (None when fine).
    duplicate_of : for a slide listed again for the same patient, the row of its first listing (the
        repeat is reported as failed but does not stop the patient from being staged).
    """

    row: int
    slide_id: str
    slide_path: str
    path: Path
    patient_id: str
    mpp: float | None = None
    error: str | None = None
    duplicate_of: int | None = None


def slide_id_for(path: str | Path) -> str:
    """The slide id: the file name without its last suffix (``a/b/S1.svs`` -> ``S1``)."""
    return Path(path).stem


def read_slides_table(path: str | Path, mpp: float | None = None) -> list[SlideEntry]:
    """Read and validate a slides table. ``mpp`` fills rows whose ``mpp`` cell is empty."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputTableError("slides table not found", path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig", skipinitialspace=True)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputTableError(f"not a readable CSV table ({str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__})", path) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InputTableError(f"missing column(s) {', '.join(missing)}; the table needs slide_path, patient_id "
                              f"(and optionally mpp); found {', '.join(frame.columns) or 'none'}", path)
    if len(frame) == 0:
        raise InputTableError("the slides table has no rows", path)
    base = path.resolve().parent
    entries: list[SlideEntry] = []
    seen_path: dict[Path, int] = {}
    seen_id: dict[str, int] = {}
    for i, rec in enumerate(frame.to_dict("records"), start=1):
        raw_path = str(rec["slide_path"]).strip()
        pid = str(rec["patient_id"]).strip()
        errors = []
        duplicate_of = None
        if not raw_path:
            errors.append("empty slide_path")
        if not pid:
            errors.append("empty patient_id")
        row_mpp = mpp
        cell = str(rec.get("mpp", "") or "").strip()
        if cell:
            try:
                row_mpp = float(cell)
                if not (math.isfinite(row_mpp) and row_mpp > 0):
                    raise ValueError
            except ValueError:
                errors.append(f"mpp {cell!r} is not a positive number")
                row_mpp = None
        p = Path(raw_path).expanduser() if raw_path else Path(f"<row {i}>")
        full = (p if p.is_absolute() else base / p).resolve() if raw_path else p
        sid = slide_id_for(full) if raw_path else f"row{i}"
        if raw_path:
            if full in seen_path:
                duplicate_of = seen_path[full]
                errors.append(f"slide listed twice in the table (rows {seen_path[full]} and {i}); only row "
                              f"{seen_path[full]} is used")
            elif sid in seen_id:
                errors.append(f"slide id {sid!r} (file stem) already used by row {seen_id[sid]}; rename one file")
            else:
                seen_path[full] = i
                seen_id[sid] = i
        entries.append(SlideEntry(i, sid, raw_path, full, pid, row_mpp, "; ".join(errors) or None, duplicate_of))
    # a slide listed twice for two different patients is ambiguous: fail the first listing too
    for e in list(entries):
        if e.error and "listed twice" in e.error:
            first = entries[e.duplicate_of - 1]
            if first.patient_id != e.patient_id and first.error is None:
                entries[first.row - 1] = SlideEntry(
                    first.row, first.slide_id, first.slide_path, first.path, first.patient_id, first.mpp,
                    f"slide listed twice in the table for different patients ({first.patient_id!r} in row "
                    f"{first.row}, {e.patient_id!r} in row {e.row})")
    return entries


# ------------------------------------------------------------------------ one folder per patient
# whole-slide image files recognised in a patient folder (OpenSlide's formats, TIFF, DICOM is a folder
# format and is not listed); other files (annotations, thumbnails, notes) are ignored
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".qptiff")


def slides_table_from_folders(folder: str | Path) -> list[dict]:
    """Rows (``slide_path``, ``patient_id``) of a folder with one sub-folder per patient.

    The sub-folder's name is the patient id; every slide file directly inside it (``SLIDE_SUFFIXES``,
    case-insensitive; hidden files skipped) is one of the patient's slides. Slide files lying directly
    in ``folder`` (whose patient is unknown) and a folder with no patient folder are errors; an empty
    patient folder is an error too (the patient could not be staged). Rows are sorted by patient, then
    file name; paths are absolute.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputTableError("slides folder not found", folder)
    loose = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SLIDE_SUFFIXES)
    if loose:
        raise InputTableError(f"slide files directly in the folder ({', '.join(loose[:5])}{', ...' if len(loose) > 5 else ''}): "
                              "put each patient's slides in a folder named by the patient id", folder)
    patients = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)
    if not patients:
        raise InputTableError("no patient folders: the folder needs one sub-folder per patient holding its slides", folder)
    rows, empty = [], []
    for pdir in patients:
        files = sorted((f for f in pdir.iterdir() if f.is_file() and not f.name.startswith(".")
                        and f.suffix.lower() in SLIDE_SUFFIXES), key=lambda f: f.name)
        if not files:
            empty.append(pdir.name)
        rows += [{"slide_path": str(f.resolve()), "patient_id": pdir.name} for f in files]
    if empty:
        raise InputTableError(f"patient folder(s) without a slide file ({', '.join(SLIDE_SUFFIXES)}): "
                              f"{', '.join(empty[:10])}", folder)
    return rows


def write_slides_table_from_folders(folder: str | Path, path: str | Path) -> Path:
    """Derive the slides table of ``folder`` (``slides_table_from_folders``) and write it to ``path``."""
    import pandas as pd

    rows = slides_table_from_folders(folder)
    write_csv(Path(path), pd.DataFrame(rows, columns=list(REQUIRED_COLUMNS)))
    return Path(path)
