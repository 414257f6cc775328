"""The ``medvol`` command line. Thin: each command parses options and calls the library.

Heavy libraries (torch, SimpleITK, monai, prefect) are imported inside the commands, so
``medvol --help`` stays fast. User errors print one line and exit with a documented code.
"""
from __future__ import annotations

import sys
from typing import Optional

import typer

from .errors import (EXIT_CODES, INTERNAL_ERROR_EXIT, LimitError, MedvolError, OutputError)

TERMINATED_EXIT = 143
_codes = "\n".join(f"  {c}  {t}" for c, t in sorted(
    {**EXIT_CODES, TERMINATED_EXIT: "terminated (SIGTERM); partial outputs removed"}.items()))
_LIMITS = ("Size budget (checked before anything is allocated or decompressed): at most "
           "2**28 voxels per volume (--max-voxels N or MEDVOL_MAX_VOXELS), 2 GiB per volume "
           "(MEDVOL_MAX_BYTES), 65 536 frames per DICOM object (MEDVOL_MAX_FRAMES), resampling "
           "may create at most 16x the acquired slices (at least 1024 are allowed) (MEDVOL_MAX_SLICE_FACTOR).")
app = typer.Typer(
    name="medvol",
    help=("medvol — medical volumetric imaging: DICOM ingest, sparse-view CT reconstruction, "
          "registration, learned priors.\n\n" + _LIMITS + "\n\nExit codes:\n\n"
          + _codes.replace("\n", "\n\n")),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


@app.callback()
def _options(
    max_voxels: Optional[int] = typer.Option(
        None, "--max-voxels", help="Voxels one input volume may declare before medvol refuses "
                                   "it (default 2**28; env MEDVOL_MAX_VOXELS)."),
) -> None:
    """Global options (before the command)."""
    from .io.budget import set_max_voxels

    set_max_voxels(max_voxels)


def _register() -> None:
    from .commands import info, ingest, pipeline, recon, register, simulate, train

    app.command("ingest")(ingest.ingest)
    app.command("info")(info.info)
    app.command("simulate")(simulate.simulate)
    app.command("recon")(recon.recon)
    app.command("register")(register.register)
    app.add_typer(train.app, name="train")
    app.add_typer(__import__("medvol.commands.ssp", fromlist=["app"]).app, name="ssp")
    app.add_typer(__import__("medvol.commands.pretrain", fromlist=["app"]).app, name="pretrain")
    app.command("run-pipeline")(pipeline.run_pipeline)
    app.command("serve")(pipeline.serve)


_register()


def _exception_families():
    """typer ≥ 0.20 vendors click: catch both its own and plain click's exception classes."""
    import click

    abort, exit_, usage = [click.exceptions.Abort], [click.exceptions.Exit], [click.ClickException]
    try:
        from typer import Abort, Exit

        abort.append(Abort)
        exit_.append(Exit)
        from typer._click.exceptions import ClickException

        usage.append(ClickException)
    except ImportError:  # pragma: no cover - older typer uses click directly
        pass
    return tuple(abort), tuple(exit_), tuple(usage)


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM so that ``finally``/``except BaseException``
    cleanup (partial output folders, servers) runs exactly as for Ctrl-C. Not a
    KeyboardInterrupt, so click does not turn it into an ``Abort``."""


def _on_sigterm(signum, frame):  # pragma: no cover - exercised by the hostile tests
    raise Terminated()


def _error_line(text: str) -> None:
    from ._text import one_line

    typer.echo(f"medvol: error: {one_line(text)}", err=True)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app, turn MedvolError into one line + exit code.

    Usage errors print typer's usage message and exit 2; Ctrl-C exits 130, SIGTERM 143 (both
    remove partial outputs); a command's own ``typer.Exit(n)`` exits ``n``; OS errors on
    outputs exit 9; running out of memory exits 8; anything unexpected prints one line and
    exits 70. Every printed line is sanitised (control characters escaped).
    """
    import os
    import signal
    import threading

    from ._atomic import OUTPUT_ERRNOS, output_error

    aborts, exits, usage_errors = _exception_families()
    if threading.current_thread() is threading.main_thread():
        try:
            signal.signal(signal.SIGTERM, _on_sigterm)
        except (ValueError, OSError):  # pragma: no cover - embedded interpreters
            pass
    try:
        rv = app(args=argv, standalone_mode=False, prog_name="medvol")
    except MedvolError as e:
        _error_line(str(e))
        return e.exit_code
    except Terminated:
        typer.echo("medvol: terminated", err=True)
        return TERMINATED_EXIT
    except (KeyboardInterrupt, *aborts):
        typer.echo("medvol: interrupted", err=True)
        return 130
    except exits as e:
        return int(getattr(e, "exit_code", 0) or 0)
    except usage_errors as e:
        e.show()
        return int(getattr(e, "exit_code", 2) or 2)
    except MemoryError:
        err = LimitError("ran out of memory", hint="the input is larger than this machine can "
                         "hold; lower --max-voxels / MEDVOL_MAX_VOXELS to refuse such inputs "
                         "up front, or use a machine with more memory")
        _error_line(str(err))
        return err.exit_code
    except OSError as e:
        if os.environ.get("MEDVOL_DEBUG"):
            raise
        if e.errno in OUTPUT_ERRNOS:
            err: MedvolError = output_error(e, getattr(e, "filename", None))
        else:
            err = OutputError(f"file system error ({e.strerror or type(e).__name__})",
                              path=getattr(e, "filename", None))
        _error_line(str(err))
        return err.exit_code
    except Exception as e:  # a bug, not bad input: one line unless debugging
        if os.environ.get("MEDVOL_DEBUG"):
            raise
        from ._text import one_line

        typer.echo(f"medvol: internal error: {type(e).__name__}: {one_line(e)} "
                   "(rerun with MEDVOL_DEBUG=1 for the traceback and please report it)", err=True)
        return INTERNAL_ERROR_EXIT
    return rv if isinstance(rv, int) else 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
