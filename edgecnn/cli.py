"""The `edgecnn` command: one click group whose subcommands are imported only when they run.

`edgecnn --help` imports neither torch nor onnx; each command imports what it needs inside itself.
Errors reach the user as one line and a non-zero exit; set EDGECNN_DEBUG=1 for the traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib import import_module

import click

from . import __version__

# name -> (module under edgecnn.commands, attribute, one-line help shown by `edgecnn --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("demo", "demo", "Run the whole pipeline on built-in synthetic data."),
    "data": ("data", "data", "Make synthetic datasets and check yours (duplicates, leakage, mislabels)."),
    "models": ("models", "models", "List the model family with parameters and MACs."),
    "train": ("train", "train", "Train a classifier on an ImageFolder dataset."),
    "eval": ("evaluate", "eval_", "Evaluate a .pt or .onnx model on a class-folder tree."),
    "export": ("export", "export", "Export a checkpoint to a verified ONNX file."),
    "quantize": ("quantize", "quantize", "Quantize an ONNX model to INT8 (or FP16)."),
    "calibrate": ("calibrate", "calibrate", "Calibrate an ONNX model's probabilities (temperature scaling)."),
    "classify": ("classify", "classify", "Classify images or a camera stream with an ONNX model."),
    "bench": ("bench", "bench", "Measure latency, throughput and memory of models."),
    "serve": ("serve", "serve", "Serve a model over HTTP: JSON API, metrics and a live camera page."),
    "deploy": ("deploy", "deploy", "Bundle a model and the runtime for a device (Raspberry Pi)."),
    "visualize": ("visualize", "visualize", "Render kernels, feature maps and softmax of a model."),
}


# Optional modules and the extra that installs each: the base install runs classify, bench and deploy.
EXTRAS = {
    "torch": "edgecnn[train]", "torchvision": "edgecnn[train]", "onnx": "edgecnn[train]", "onnxscript": "edgecnn[train]",
    "cv2": "edgecnn[camera]",
    "starlette": "edgecnn[serve]", "uvicorn": "edgecnn[serve]", "prometheus_client": "edgecnn[serve]",
    "multipart": "edgecnn[serve]", "python_multipart": "edgecnn[serve]",
    "openvino": "edgecnn[openvino]",
}


class OneLineUsageError(click.ClickException):
    """Click's usage error as the one line the README promises: ``Error: ... (see edgecnn CMD --help)``, exit 2."""

    exit_code = 2

    @classmethod
    def of(cls, exc: click.UsageError) -> OneLineUsageError:
        where = exc.ctx.command_path if exc.ctx is not None else "edgecnn"
        return cls(f"{exc.format_message()} (see {where} --help)")


def _one_line_usage(exc: click.UsageError) -> click.ClickException:
    # No arguments at all shows the help (click's NoArgsIsHelpError): that is not an error to shorten.
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        return exc
    return OneLineUsageError.of(exc)


class LazyGroup(click.Group):
    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:  # an unknown option of the group itself: `edgecnn --bogus`
            raise _one_line_usage(exc) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        try:
            mod = import_module(f"edgecnn.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] in EXTRAS:
                return _missing_extra(name, exc.name)
            raise
        return getattr(mod, attr)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a subcommand's bad option or argument, an unknown command
            raise _one_line_usage(exc) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except BrokenPipeError:  # `edgecnn ... | head`: the reader has what it wanted; end quietly, exit 0
            _silence_stdout()
            raise click.exceptions.Exit(0) from None
        except ModuleNotFoundError as exc:
            root = (exc.name or "").split(".")[0]
            if root in EXTRAS:
                raise click.ClickException(
                    f"`edgecnn {ctx.invoked_subcommand}` needs {root}, which is not installed: pip install '{EXTRAS[root]}'"
                ) from None
            raise
        except Exception as exc:  # the last line of defence: a message, not a traceback
            if os.environ.get("EDGECNN_DEBUG"):
                raise
            raise click.ClickException(one_line(exc)) from exc

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Uses the static table, so that `edgecnn --help` imports no command module.
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, _, help_) in COMMANDS.items()])


def _missing_extra(name: str, module: str) -> click.Command:
    root = module.split(".")[0]

    @click.command(name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def stub() -> None:
        raise click.ClickException(f"`edgecnn {name}` needs {root}, which is not installed: pip install '{EXTRAS[root]}'")

    return stub


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edgecnn")
@click.option("-v", "--verbose", is_flag=True, help="Log debugging detail.")
def cli(verbose: bool) -> None:
    """Train compact CNN image classifiers, export them to ONNX, quantize to INT8 and run them on the edge.

    \b
    Examples:
      edgecnn demo                                  # everything, on built-in synthetic data
      edgecnn train photos/ -o runs/photos          # a folder per class
      edgecnn export runs/photos/best.pt -o model.onnx
      edgecnn quantize model.onnx --calib photos/
      edgecnn classify images -m model.int8.onnx holiday/*.jpg
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s: %(message)s")


def _silence_stdout() -> None:
    from .runtime.output import silence_stdout  # here, not at the top: `edgecnn --help` stays light

    silence_stdout()


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main(argv: list[str] | None = None) -> None:
    """Console entry point; Ctrl-C exits 130 without a traceback, a closed stdout (`| head`) exits 0 quietly."""
    try:
        cli.main(args=argv, prog_name="edgecnn")
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:  # raised outside a command, e.g. while click prints the help
        _silence_stdout()
        sys.exit(0)


if __name__ == "__main__":
    main()
