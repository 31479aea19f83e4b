"""One reader for every data file a command reads: CSV, .npz and Parquet, into a ``Table``.

    t = load_table("train.csv")                                   # header and delimiter detected
    t = load_table("train.csv", label_column="species", delimiter=";")
    t.X, t.y, t.feature_names

CSV: UTF-8 (a byte-order mark and CRLF line ends are fine); the delimiter is a comma, a semicolon
or a tab (detected from the first lines unless given); the first row is a header when a feature
cell in it is not a number, or when its label is the only text label of the column (``header``
decides instead when True/False). Labels are whole numbers (``5`` or ``5.0``) or text (class
names such as ``setosa``); text labels are kept as written and mapped to classes the way
scikit-learn's LabelEncoder maps them (sorted), see hetrain.data.validate.check_labels.
.npz: arrays ``X`` (n x d) and ``y`` (n). Parquet (.parquet, .pq): needs pyarrow; the column
names are the header.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import os
import pathlib
import warnings
import zipfile

import numpy as np

from hetrain.errors import DataError, DataWarning

from .validate import check_features, check_labels

DELIMITERS = (",", ";", "\t")
PARQUET_SUFFIXES = (".parquet", ".pq")
_SNIFF_LINES = 20  # non-blank lines the delimiter is detected on
_DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab"}


@dataclasses.dataclass
class Table:
    """A data file as read: ``X`` float64 (n x d), ``y`` the raw labels (n,: int64 when every label
    is a whole number, else str; None without a label column), ``feature_names`` (the header's
    names of the feature columns, None without a header) and ``source`` (the file)."""

    X: np.ndarray
    y: np.ndarray | None
    feature_names: list[str] | None
    source: str

    @property
    def n_classes(self) -> int:
        return 0 if self.y is None else int(np.unique(self.y).size)


def load_table(path: str | os.PathLike, *, header: bool | None = None, label_column: int | str | None = 0,
               delimiter: str | None = None, need_labels: bool = True, n_features: int | None = None) -> Table:
    """Read a .csv (or any other suffix: read as CSV), .npz, .parquet or .pq file.

    ``header``: None detects it (CSV); True/False say whether the first row holds column names.
    ``label_column``: the label's column, a 0-based index (negative: from the end) or a header
    name; None: no label column (every column is a feature). ``delimiter``: None detects a comma,
    semicolon or tab. ``need_labels``: with False the label column is optional (a name missing
    from the header means the file has none: y is None). ``n_features``: the feature count a
    model expects; a file with exactly that many columns and no label is then said to lack its label
    column before a feature is misread as labels.

    Raises DataError naming the file, and for CSV the line and the column, of what is wrong.
    """
    p = pathlib.Path(path)
    if not p.is_file():
        raise DataError(f"data file {str(p)!r} does not exist")
    if label_column is None and need_labels:
        raise DataError(f"{p}: labels are needed but no label column was given (--label-column NAME or INDEX)")
    suffix = p.suffix.lower()
    if suffix == ".npz":
        return _load_npz(p, label_column, need_labels)
    if suffix in PARQUET_SUFFIXES:
        return _load_parquet(p, label_column, need_labels, n_features)
    return _load_csv(p, header, label_column, delimiter, need_labels, n_features)


# ---------------------------------------------------------------------------- CSV
def _load_csv(path: pathlib.Path, header, label_column, delimiter, need_labels, n_features) -> Table:
    try:
        # utf-8-sig: a leading BOM is dropped instead of being read into the first cell
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text CSV file") from None
    if delimiter is None:
        delimiter = detect_delimiter(text)
    elif delimiter not in DELIMITERS and len(delimiter) != 1:
        raise DataError(f"the delimiter must be one character such as ',' ';' or a tab, got {delimiter!r}")
    rows = [(n, row) for n, row in enumerate(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), start=1)
            if row and any(c.strip() for c in row)]  # blank lines are skipped
    if not rows:
        raise DataError(f"{path}: the file is empty")
    width = len(rows[0][1])
    for lineno, row in rows:
        if len(row) != width:
            raise DataError(f"{path}: line {lineno} has {len(row)} columns, earlier lines have {width}"
                            + _delimiter_hint(row, delimiter))
    first_line, first = rows[0]
    label = _label_index(path, label_column, first, width, header, need_labels, delimiter)
    if header is None:
        header = _looks_like_header(rows, label)
    names = [c.strip() for c in first] if header else None
    body = rows[1:] if header else rows
    if not body:
        raise DataError(f"{path}: the file holds a header row (line {first_line}) and no data")
    features = [i for i in range(width) if i != label]
    if not features:
        raise DataError(f"{path}: line {first_line} has {width} column; need a label and at least one feature"
                        if label is not None else f"{path}: the file has no columns")
    _check_not_unlabelled(path, width, label, n_features)
    X = np.empty((len(body), len(features)), dtype=np.float64)
    for r, (lineno, row) in enumerate(body):
        for j, col in enumerate(features):
            cell = row[col]
            try:
                X[r, j] = float(cell)
            except ValueError:
                raise DataError(f"{path}: line {lineno}, column {_column_name(col, names, features)} "
                                + ("is empty" if not cell.strip() else f"is not a number: {cell!r}")
                                + _decimal_hint(cell, delimiter)) from None
    X = check_features(X, what=f"features in {path}")
    y = None
    if label is not None:
        cells = [row[label].strip() for _, row in body]
        for (lineno, _), cell in zip(body, cells):
            if not cell:
                raise DataError(f"{path}: line {lineno}, column {_column_name(label, names, features)} is empty")
        y = _labels_from_text(cells, f"{path}, column {_column_name(label, names, features)}",
                              [lineno for lineno, _ in body])
    return Table(X, y, [names[i] for i in features] if names else None, str(path))


def detect_delimiter(text: str) -> str:
    """The delimiter of a CSV text: among comma, semicolon and tab, the one that splits the first
    non-blank lines into the same number (at least two) of columns, the most columns first; a comma
    when none does (a one-column file: its error comes later)."""
    lines = [line for line in text.splitlines() if line.strip()][:_SNIFF_LINES]
    best, best_width = ",", 1
    for d in (";", "\t", ","):  # a decimal comma with ';' columns splits both ways: ';' wins ties
        widths = {len(row) for row in csv.reader(lines, delimiter=d)}
        if len(widths) == 1 and (w := widths.pop()) > best_width:
            best, best_width = d, w
    return best


def _label_index(path, label_column, first_row, width, header, need_labels, delimiter) -> int | None:
    """The label's column index in a CSV row of ``width`` columns (None: no label column)."""
    if label_column is None:
        return None
    if isinstance(label_column, str):
        if header is False:
            raise DataError(f"--label-column {label_column!r} is a column name, but the file is read without a header "
                            "(--no-header): give its index instead")
        names = [c.strip() for c in first_row]
        if label_column in names:
            return names.index(label_column)
        if not need_labels:
            return None
        shown = ", ".join(repr(n) for n in names[:10]) + (", ..." if len(names) > 10 else "")
        raise DataError(f"{path}: no column named {label_column!r} in the header (line 1: {shown})"
                        + ("" if width > 1 else _delimiter_hint(first_row, delimiter)))
    index = int(label_column)
    if not -width <= index < width:
        raise DataError(f"--label-column {index}: {path} has {width} column{'s' if width != 1 else ''} "
                        f"(indices 0 to {width - 1}, or -1 for the last)" + _delimiter_hint(first_row, delimiter))
    return index % width


def _looks_like_header(rows, label: int | None) -> bool:
    """The first row names the columns: one of its feature cells is not a number where the next line
    has a number, or its label is text while every other line's label is a number. (A file of one
    line is data.)"""
    if len(rows) < 2:
        return False
    first, second = rows[0][1], rows[1][1]
    if any(not _is_number(c) and _is_number(second[i]) for i, c in enumerate(first) if i != label):
        return True
    if label is None or _is_number(first[label]):
        return False
    return all(_is_number(row[label]) for _, row in rows[1:])


def _labels_from_text(cells: list[str], where: str, lines: list[int] | None = None) -> np.ndarray:
    """int64 when every label is a whole number (``5`` or ``5.0``), else the text as written (with a
    DataWarning when numbers and text are mixed: a stray line is more likely than such classes)."""
    try:
        values = np.asarray([float(c) for c in cells])
    except ValueError:
        numbers = [_is_number(c) for c in cells]
        if any(numbers):
            i = numbers.index(False)
            at = f"line {lines[i]}" if lines else f"row {i}"
            warnings.warn(DataWarning(f"{where}: the labels mix numbers and text ({at}: {cells[i]!r}); every label "
                                      "is read as a class name"), stacklevel=4)
        return check_labels(np.asarray(cells, dtype=str))
    if np.all(np.isfinite(values)) and np.all(values == np.round(values)):
        return values.astype(np.int64)
    odd = next(c for c, v in zip(cells, values) if not (np.isfinite(v) and v == round(v)))
    warnings.warn(DataWarning(f"{where}: the labels are numbers but not all whole numbers (such as {odd}): each "
                              "distinct value is a class of its own"), stacklevel=4)
    return np.asarray(cells, dtype=str)


def _check_not_unlabelled(path, width: int, label: int | None, n_features: int | None) -> None:
    if n_features is not None and label is not None and width == n_features:
        raise DataError(f"{path} has {width} columns, exactly the {n_features} features the model expects: it seems "
                        "to have no label column (by default column 0 must be the label; --label-column names "
                        "another)")


def _column_name(col: int, names: list[str] | None, features: list[int]) -> str:
    """'3 (feature 2)' or "3 ('petal_width', feature 2)" or '0 (label)' (0-based, as --label-column)."""
    what = f"feature {features.index(col)}" if col in features else "label"
    return f"{col} ({names[col]!r}, {what})" if names else f"{col} ({what})"


def _delimiter_hint(row: list[str], delimiter: str) -> str:
    others = [d for d in DELIMITERS if d != delimiter and any(d in c for c in row)]
    if not others:
        return ""
    return (f" (read with delimiter {_DELIMITER_NAMES.get(delimiter, repr(delimiter))}; the line also holds "
            f"{_DELIMITER_NAMES[others[0]]}s: is --delimiter {others[0]!r} meant?)")


def _decimal_hint(cell: str, delimiter: str) -> str:
    if delimiter != "," and "," in cell and _is_number(cell.replace(",", ".", 1)):
        return " (a decimal comma? hetrain reads numbers written with a decimal point, such as 1.5)"
    return ""


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------------------- .npz
def _load_npz(path: pathlib.Path, label_column, need_labels) -> Table:
    try:
        with np.load(path, allow_pickle=False) as z:
            want = {"X", "y"} if need_labels else {"X"}
            missing = want - set(z.files)
            if missing:
                raise DataError(f"{path}: .npz must hold arrays 'X' and 'y'; missing {sorted(missing)} (has {z.files})")
            X = z["X"]
            y = z["y"] if ("y" in z.files and label_column is not None) else None
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    if X.size == 0:
        raise DataError(f"{path}: the file holds no samples")
    X = check_features(X, what=f"features in {path}")
    return Table(X, None if y is None else check_labels(y, n_rows=X.shape[0]), None, str(path))


# ---------------------------------------------------------------------------- Parquet
def _load_parquet(path: pathlib.Path, label_column, need_labels, n_features) -> Table:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet files needs pyarrow: pip install pyarrow") from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for a damaged file
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    names = [str(n) for n in table.column_names]
    if not names or table.num_rows == 0:
        raise DataError(f"{path}: the file holds no samples")
    width = len(names)
    if isinstance(label_column, str):
        label = names.index(label_column) if label_column in names else None
        if label is None and need_labels:
            shown = ", ".join(repr(n) for n in names[:10]) + (", ..." if width > 10 else "")
            raise DataError(f"{path}: no column named {label_column!r} (columns: {shown})")
    elif label_column is None:
        label = None
    else:
        if not -width <= int(label_column) < width:
            raise DataError(f"--label-column {label_column}: {path} has {width} columns (indices 0 to {width - 1})")
        label = int(label_column) % width
    features = [i for i in range(width) if i != label]
    if not features:
        raise DataError(f"{path}: need a label and at least one feature column, the file has {width} column")
    _check_not_unlabelled(path, width, label, n_features)
    columns = []
    for i in features:
        col = table.column(i)
        if col.null_count:
            row = next(r for r, v in enumerate(col.to_pylist()) if v is None)
            raise DataError(f"{path}: row {row}, column {i} ({names[i]!r}) is empty (null)")
        try:
            columns.append(np.asarray(col.to_numpy(), dtype=np.float64))
        except (TypeError, ValueError):
            raise DataError(f"{path}: column {i} ({names[i]!r}) is not numeric (type {col.type})") from None
    X = check_features(np.column_stack(columns), what=f"features in {path}")
    y = None
    if label is not None:
        values = table.column(label).to_pylist()
        if any(v is None for v in values):
            row = values.index(None)
            raise DataError(f"{path}: row {row}, column {label} ({names[label]!r}, label) is empty (null)")
        y = _labels_from_text([str(v) for v in values], f"{path}, column {label} ({names[label]!r}, label)") \
            if any(isinstance(v, str) for v in values) else check_labels(np.asarray(values), n_rows=X.shape[0])
    return Table(X, y, [names[i] for i in features], str(path))
