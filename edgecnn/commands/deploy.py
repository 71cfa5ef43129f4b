"""`edgecnn deploy`: one call of edgecnn.deploy.deploy, then where the bundle is and what to do with it."""

from __future__ import annotations

from pathlib import Path

import click

from .common import echo_json


@click.command("deploy")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Bundle folder to write (built beside it, then renamed into place).")
@click.option("--name", default=None, help="Bundle name, used in its README and systemd unit. [default: OUT_DIR's name]")
@click.option("--force", is_flag=True, help="Replace OUT_DIR if it holds an earlier bundle.")
@click.option("--json", "as_json", is_flag=True, help="Print the bundle's files, checksums and size as one JSON object.")
def deploy(model: Path, out_dir: Path, name: str | None, force: bool, as_json: bool) -> None:
    """Bundle MODEL (an .onnx file) with the runtime for a device such as a Raspberry Pi.

    OUT_DIR gets model.onnx, app.pyz (the runtime and an argparse CLI in one file), requirements.txt,
    requirements-camera.txt, README.md (install, run, run at boot), a systemd unit, bundle.json and
    SHA256SUMS. On the board only Python >= 3.11, onnxruntime, numpy and Pillow are needed:
    `python3 app.pyz IMAGE... [--json]` prints what `edgecnn classify images` prints. A model that
    does not load is refused.

    \b
    Examples:
      edgecnn deploy edgecnn-demo/model.int8.onnx -o pi-bundle
      edgecnn deploy model.onnx -o bundles/shapes --name shapes --force
      scp -r pi-bundle pi@raspberrypi.local:      # then follow pi-bundle/README.md
    """
    from ..deploy import MANIFEST_FILE
    from ..deploy import deploy as make_bundle
    from ..runtime.output import human_bytes

    result = make_bundle(model, out_dir, name=name, force=force)
    if as_json:
        echo_json({"out_dir": str(result.out_dir), "name": result.name, "size_bytes": result.size_bytes,
                   "precision": result.precision, "labels": list(result.labels), "files": result.files})
        return
    click.echo(f"wrote {result.out_dir}/ ({human_bytes(result.size_bytes)}, {len(result.files) + 1} files, "
               f"{result.precision} model, {len(result.labels)} classes)")
    for rel in [*sorted(result.files), MANIFEST_FILE]:  # every file counted above, the checksums included
        click.echo(f"  {rel:<28} {(result.out_dir / rel).stat().st_size:>10,d} bytes")
    click.echo(f"try it:  python3 {result.app} IMAGE...   (on the board: see {result.out_dir / 'README.md'})")
