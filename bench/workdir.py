"""Where a benchmark keeps its data: a new directory (under `--dir` when given, else the system's
temporary directory), removed when the benchmark ends, whatever happens, unless `--keep`."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, default=None, help="make the data set's directory in here")
    parser.add_argument("--keep", action="store_true", help="keep the data set when done (it is removed by default)")


@contextmanager
def work_dir(prefix: str, options: argparse.Namespace) -> Iterator[Path]:
    if options.dir is not None:
        options.dir.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=options.dir))
    try:
        yield path
    finally:
        if options.keep:
            print(f"data set kept in {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)
