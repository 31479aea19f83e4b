"""`hetrain report MODEL.json --out report.html`: the training run recorded in a model file, as a
self-contained HTML page with plots (or, with --format png-dir, a folder of PNGs and an index.html).
Needs matplotlib (pip install matplotlib, or the `report` extra); see protocol/report_html.py."""
from __future__ import annotations

import argparse

FORMATS = ("html", "png-dir")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL.json", help="a model file written by `hetrain fit`, `decrypt` or `demo`")
    p.add_argument("--out", required=True, help="the HTML file to write (--format png-dir: the folder)")
    p.add_argument("--format", default="html", choices=FORMATS,
                   help="html (default): one self-contained file, plots embedded; png-dir: a folder with one PNG "
                        "per plot and an index.html")


def run(args) -> int:
    import pathlib

    from hetrain.errors import HetrainUserError
    from hetrain.outputs import check_writable
    from hetrain.protocol.model import TrainedModel
    from hetrain.protocol.report_html import build_sections, write_html, write_png_dir

    if args.format == "html":
        check_writable(args.out, "report")
    elif pathlib.Path(args.out).exists() and not pathlib.Path(args.out).is_dir():
        raise HetrainUserError(f"--out {args.out} exists and is not a folder: --format png-dir writes a folder "
                               "(name a new one, e.g. --out /tmp/report-pngs)")
    model = TrainedModel.load(args.model)
    sections = build_sections(model)
    if args.format == "html":
        out = write_html(sections, model, args.out, str(args.model))
    else:
        out = write_png_dir(sections, model, args.out, str(args.model))
    drawn = [s.title for s in sections if s.png is not None]
    missing = [s.title for s in sections if s.png is None and "not recorded" in s.caption]
    print(f"report written to {out}: {len(drawn)} plot(s) ({', '.join(drawn)})")
    if missing:
        print(f"not recorded in {args.model}: {', '.join(missing)} (written by an older hetrain, or not measured "
              "on this path)")
    return 0
