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
    app.command("run-pipeline")(pipeline.run_pipeline)
    app.command("serve")(pipeline.serve)


_register()


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app, turn MedvolError into one line + exit code."""
    import click

    try:
        app(args=argv, standalone_mode=False, prog_name="medvol")
    except MedvolError as e:
        typer.echo(f"medvol: error: {e}", err=True)
        return e.exit_code
    except click.exceptions.Abort:
        typer.echo("medvol: aborted", err=True)
        return 130
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except KeyboardInterrupt:
        typer.echo("medvol: interrupted", err=True)
        return 130
    except Exception as e:  # a bug, not bad input: one line unless debugging
        import os

        if os.environ.get("MEDVOL_DEBUG"):
            raise
        typer.echo(f"medvol: internal error: {type(e).__name__}: {e} "
                   "(rerun with MEDVOL_DEBUG=1 for the traceback and please report it)", err=True)
        return INTERNAL_ERROR_EXIT
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
