"""Run a notebook headless with papermill, keeping its stored outputs readable.

    python -m cinephile.notebooks main.ipynb -p EPOCHS 1 -p RUN_NAME quick
    python -m cinephile.notebooks llm.ipynb -o runs/llm-executed.ipynb

Parameters override the cell tagged ``parameters`` (values are Python literals, anything else is
a string). Stream outputs are coalesced and carriage returns resolved (nbclient's
``coalesce_streams``), so a progress bar leaves one final line instead of one line per refresh.
By default the notebook is executed in place, as "Restart & Run All" would.
"""

from __future__ import annotations

import argparse
import ast
import os
from pathlib import Path


def parse_value(text: str):
    """``"3"`` -> 3, ``"None"`` -> None, ``"['a']"`` -> ['a'] (tuples become lists, which papermill
    can write into the notebook); anything else stays a string."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return list(value) if isinstance(value, tuple) else value


def run_notebook(path: str | os.PathLike, output: str | os.PathLike | None = None, *,
                 parameters: dict | None = None, cwd: str | os.PathLike | None = None,
                 progress: bool = True) -> Path:
    """Execute ``path`` top to bottom and write the executed notebook (in place by default).

    Args:
        path: the notebook.
        output: where the executed notebook goes (default: ``path`` itself).
        parameters: values for the ``parameters`` cell.
        cwd: working directory of the kernel (default: the notebook's folder).
        progress: show papermill's cell progress bar.

    Returns:
        The path of the executed notebook.
    """
    import papermill

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"notebook {path} not found; run from the project folder (main.ipynb, llm.ipynb)")
    output = Path(output) if output else path
    output.parent.mkdir(parents=True, exist_ok=True)  # e.g. runs/ on a fresh clone
    papermill.execute_notebook(str(path), str(output), parameters=parameters or {},
                               cwd=str(cwd or path.parent.resolve()), kernel_name="python3",
                               progress_bar=progress, coalesce_streams=True)
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cinephile.notebooks", description=__doc__.split("\n")[0])
    parser.add_argument("notebook")
    parser.add_argument("-o", "--output", help="executed notebook (default: overwrite the input)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="override a parameter, e.g. -p EPOCHS 1")
    args = parser.parse_args(argv)
    params = {name: parse_value(value) for name, value in args.parameter}
    print(f"executed notebook written to {run_notebook(args.notebook, args.output, parameters=params)}")


if __name__ == "__main__":
    main()
