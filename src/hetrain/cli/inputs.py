"""The options of every command that reads a data file: --header/--no-header, --label-column,
--delimiter, and the one call that reads it (hetrain.data.load_table)."""
from __future__ import annotations

import argparse

from hetrain.data import Table, load_table

_DELIMITER_WORDS = {"comma": ",", "semicolon": ";", "tab": "\t", "\\t": "\t"}


def add_input_arguments(parser: argparse.ArgumentParser, labels: bool = True) -> None:
    """Add --header/--no-header, --label-column and --delimiter to ``parser``.

    ``labels=False``: for a command whose input has no labels (prediction); --label-column then
    names a column to drop if the file has one (default: none)."""
    parser.add_argument("--header", action=argparse.BooleanOptionalAction, default=None,
                        help="CSV: the first row names the columns (--no-header: it is data); default: detected "
                             "(a header when a feature cell of the first row is not a number)")
    if labels:
        parser.add_argument("--label-column", type=label_column, default=0, metavar="NAME|INDEX",
                            help="the label's column: a header name such as species, or a 0-based index (-1: the "
                                 "last column); labels are whole numbers or text class names (default: 0, the "
                                 "first column)")
    else:
        parser.add_argument("--label-column", type=label_column, default=None, metavar="NAME|INDEX",
                            help="a label column to drop if the file has one: a header name or a 0-based index "
                                 "(default: none, every column is a feature)")
    parser.add_argument("--delimiter", type=delimiter, default=None, metavar="CHAR",
                        help="CSV column separator: ',' ';' or tab (also the words comma, semicolon, tab); "
                             "default: detected from the first lines")


def table_from_args(args: argparse.Namespace, need_labels: bool = True, n_features: int | None = None) -> Table:
    """The data file of ``args.data`` read with the input options (DataError naming file, line, column)."""
    return load_table(args.data, header=args.header, label_column=args.label_column, delimiter=args.delimiter,
                      need_labels=need_labels, n_features=n_features)


def describe(table: Table) -> str:
    """'150 samples, 4 features, 3 classes (setosa, versicolor, virginica) from iris.csv'."""
    import numpy as np

    text = f"{table.X.shape[0]} samples, {table.X.shape[1]} features"
    if table.y is not None:
        classes = np.unique(table.y).tolist()
        shown = ", ".join(map(str, classes[:6])) + (", ..." if len(classes) > 6 else "")
        text += f", {len(classes)} classes ({shown})"
    return f"{text} from {table.source}"


def label_column(text: str) -> int | str:
    """--label-column: an int index when it is written as an integer, else a column name."""
    text = str(text)
    try:
        return int(text)
    except ValueError:
        if not text.strip():
            raise argparse.ArgumentTypeError("give a column name or a 0-based index such as 0 or -1") from None
        return text


def delimiter(text: str) -> str:
    """--delimiter: one character, or comma / semicolon / tab / \\t."""
    text = _DELIMITER_WORDS.get(str(text).lower(), str(text))
    if len(text) != 1 or text in "\"\r\n":
        raise argparse.ArgumentTypeError(f"give one character such as ',' ';' or tab, got {text!r}")
    return text
