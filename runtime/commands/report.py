"""fcnx report DIR... -o report.html: one self-contained HTML page (pictures and plots
embedded, no network) from what fcnx wrote in the folders: model card, training curves,
quality, parity with disagreement pictures, predictions, speed. Example:

  fcnx report fcnx-demo -o fcnx-demo/report.html
"""

from __future__ import annotations

import argparse


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "dirs", nargs="+", metavar="DIR", help="folders fcnx wrote into (searched recursively)"
    )
    parser.add_argument(
        "-o", "--out", default="report.html", help="the HTML file to write (default: report.html)"
    )
    parser.add_argument("--title", default="", help="the page's title (default: the folders' names)")
    return parser


def run(args: argparse.Namespace) -> int:
    from fcnx.runtime.html_report import build_report

    print(f"wrote {build_report(args.dirs, args.out, args.title)}")
    return 0
