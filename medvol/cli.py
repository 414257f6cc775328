"""The ``medvol`` command line. Thin: each command parses options and calls the library.

Heavy libraries (torch, SimpleITK, monai, prefect) are imported inside the commands, so
``medvol --help`` stays fast. User errors print one line and exit with a documented code.
"""
from __future__ import annotations

import sys

import typer

from .errors import EXIT_CODES, INTERNAL_ERROR_EXIT, MedvolError

_codes = "\n".join(f"  {c}  {t}" for c, t in sorted(EXIT_CODES.items()))
app = typer.Typer(
    name="medvol",
    help=("medvol — medical volumetric imaging: DICOM ingest, sparse-view CT reconstruction, "
          "registration, learned priors.\n\nExit codes:\n\n" + _codes.replace("\n", "\n\n")),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _register() -> None:
    from .commands import info, ingest, pipeline, recon, register, simulate, train

    app.command("ingest")(ingest.ingest)
    app.command("info")(info.info)
    app.command("simulate")(simulate.simulate)
    app.command("recon")(recon.recon)
    app.command("register")(register.register)
    app.add_typer(train.app, name="train")
    app.add_typer(__import__("medvol.commands.ssp", fromlist=["app"]).app, name="ssp")
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


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app, turn MedvolError into one line + exit code.

    Usage errors print typer's usage message and exit 2; Ctrl-C exits 130; a command's own
    ``typer.Exit(n)`` exits ``n``; anything unexpected prints one line and exits 70.
    """
    aborts, exits, usage_errors = _exception_families()
    try:
        rv = app(args=argv, standalone_mode=False, prog_name="medvol")
    except MedvolError as e:
        typer.echo(f"medvol: error: {e}", err=True)
        return e.exit_code
    except (KeyboardInterrupt, *aborts):
        typer.echo("medvol: interrupted", err=True)
        return 130
    except exits as e:
        return int(getattr(e, "exit_code", 0) or 0)
    except usage_errors as e:
        e.show()
        return int(getattr(e, "exit_code", 2) or 2)
    except Exception as e:  # a bug, not bad input: one line unless debugging
        import os

        if os.environ.get("MEDVOL_DEBUG"):
            raise
        typer.echo(f"medvol: internal error: {type(e).__name__}: {e} "
                   "(rerun with MEDVOL_DEBUG=1 for the traceback and please report it)", err=True)
        return INTERNAL_ERROR_EXIT
    return rv if isinstance(rv, int) else 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
