"""The ``xaudit`` command.

Each subcommand lives in its own section below. Errors a user can cause
(:class:`explain.errors.XauditError`, ``ValueError``, ``TypeError``) are printed as one
line with their code and exit with status 2; nothing prints a traceback for bad input.
"""

from __future__ import annotations

import functools
import sys

import click

from explain.errors import XauditError


def friendly_errors(fn):
    """Turn user-caused errors into one clear line and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except XauditError as exc:
            click.echo(f"error [{exc.code}]: {exc.message}", err=True)
            sys.exit(2)
        except (ValueError, TypeError, FileNotFoundError, PermissionError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="xaudit")
def main() -> None:
    """xaudit: explainability audits for Keras models."""


# ----------------------------------------------------------------------------- explain
@main.command("explain")
@click.argument("model_path", type=click.Path(dir_okay=False))
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False),
              help="An .npz (array x) or .csv file of rows to explain.")
@click.option("--method", default="integrated_gradients", show_default=True)
@click.option("--rows", default=8, show_default=True, help="Explain the first N rows.")
@click.option("--out", default="attributions.npy", show_default=True,
              help="Where to write the attributions (.npy).")
@friendly_errors
def explain_cmd(model_path: str, data_path: str, method: str, rows: int, out: str) -> None:
    """Compute attributions for the first rows of DATA and save them as .npy."""
    import numpy as np

    from explain.attributions import explain as run
    from explain.datasets import load_data_file
    from explain.modelio import load_model_safely

    model, _spec = load_model_safely(model_path)
    data = load_data_file(data_path)
    res = run(model, data.x[:rows], method)
    np.save(out, res.values)
    msg = f"wrote {out} {res.values.shape}"
    if res.completeness_gap is not None:
        msg += f"; max |completeness gap| {float(np.max(np.abs(res.completeness_gap))):.3g}"
    click.echo(msg)


# ----------------------------------------------------------------------------- inspect
# (model intake: explain/modelio.py)

# ----------------------------------------------------------------------------- train
# (explain/training.py)

# ----------------------------------------------------------------------------- audit / demo
# (explain/audit.py)

# ----------------------------------------------------------------------------- serve / worker / beat / keys
# (api/, worker/)


if __name__ == "__main__":  # pragma: no cover
    main()
