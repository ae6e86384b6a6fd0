"""The hospital's own references for the pictures of a batch: which patient and which lesion each one shows.

A hospital sends them as a small CSV beside the files (the `references` form field of an upload, or
`melanoma submit --references FILE`), a row per picture:

    file,patient,lesion
    ISIC_0001.jpg,P-00417,left-shoulder-2

`file` is the name the picture is sent under; `patient` and `lesion` are the hospital's pseudonymous codes
(never names), either one may be left out. The server stores them on the picture, shows them on the worklist
and the alert page, and returns them in the results. Pure parsing, shared by the server and the client, so a
mistake is caught on the hospital's machine before anything is uploaded, in the same words.
"""

import csv
import io
from collections.abc import Iterable

COLUMNS = ("file", "patient", "lesion")
MAX_LENGTH = 100


class ReferencesError(ValueError):
    """The references CSV cannot be used as it is; the message names the line and what to fix."""


def parse_references(text: str, filenames: Iterable[str]) -> dict[str, tuple[str | None, str | None]]:
    """{file name: (patient, lesion)} for the files the CSV names; every name must be one of filenames."""
    names = set(filenames)
    rows = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    header = [column.strip().lower() for column in next(rows, [])]
    unknown = [column for column in header if column not in COLUMNS]
    if "file" not in header or unknown or len(set(header)) != len(header) or len(header) < 2:
        raise ReferencesError(f"references: the first line must name the columns file and patient and/or lesion "
                              f"(got {','.join(header) or 'nothing'})")
    references: dict[str, tuple[str | None, str | None]] = {}
    for line, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise ReferencesError(f"references line {line}: {len(row)} values for {len(header)} columns")
        values = dict(zip(header, (cell.strip() for cell in row), strict=True))
        name = values["file"]
        if name not in names:
            raise ReferencesError(f"references line {line}: {name!r} is not a file of this batch")
        if name in references:
            raise ReferencesError(f"references line {line}: {name!r} is named twice")
        for column in ("patient", "lesion"):
            value = values.get(column, "")
            if len(value) > MAX_LENGTH or not value.isprintable():
                raise ReferencesError(f"references line {line}: the {column} reference must be printable and at "
                                      f"most {MAX_LENGTH} characters")
        references[name] = (values.get("patient") or None, values.get("lesion") or None)
    return references
