"""`edgecnn data synth|check`: write the built-in synthetic dataset; check a dataset for duplicates, leakage, mislabels."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def data() -> None:
    """Make datasets and check them.

    \b
    Examples:
      edgecnn data synth data/shapes
      edgecnn data check photos/ -m runs/photos/best.pt
      edgecnn data synth data/shapes10 --classes 10 --per-class 300 --size 96
    """


@data.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--classes", default=5, show_default=True, type=click.IntRange(2, 10), help="Number of shape classes.")
@click.option("--per-class", default=200, show_default=True, type=click.IntRange(5), help="Images per class, train and val together (80/20).")
@click.option("--size", default=64, show_default=True, type=click.IntRange(16, 1024), help="Image side in pixels.")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, same files.")
@click.option("--force", is_flag=True, help="Replace a different synthetic set already in OUT_DIR.")
def synth(out_dir: Path, classes: int, per_class: int, size: int, seed: int, force: bool) -> None:
    """Write a deterministic synthetic ImageFolder: OUT_DIR/{train,val}/<class>/*.png.

    Shapes and textures with random colours, position, scale, rotation, background and noise: a CNN has
    to learn their outlines, since no class differs in mean colour.

    OUT_DIR must be new, empty, or hold the same set (rewritten as it was). A different synthetic set
    there is replaced only with --force; a folder of anything else is never written into.

    \b
    Example:
      edgecnn data synth data/shapes --classes 5 --per-class 200
    """
    from ..synth import synthesize

    summary = synthesize(out_dir, classes=classes, per_class=per_class, size=size, seed=seed, force=force)
    if summary.replaced:
        click.echo(f"replaced the earlier synthetic set in {summary.root} ({summary.replaced})")
    click.echo(f"wrote {summary.train_images} train and {summary.val_images} val images of "
               f"{len(summary.classes)} classes ({', '.join(summary.classes)}) to {summary.root}")


@data.command()
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-m", "--model", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A .pt checkpoint or .onnx model: also rank the images most likely mislabeled.")
@click.option("--img-size", type=click.IntRange(8), default=None,
              help="Model input side for the too-small check. [default: the model's, else the default architecture's]")
@click.option("--min-prob", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="A suspect is predicted as another class with at least this probability.")
@click.option("--val-split", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2, show_default=True,
              help="As for `edgecnn train`: the split checked when DATA_DIR has no train/ and val/.")
@click.option("--seed", type=int, default=0, show_default=True, help="As for `edgecnn train` (the split's seed).")
@click.option("--threads", type=click.IntRange(1), default=4, show_default=True, help="Threads reading and hashing files.")
@click.option("--show", type=click.IntRange(1), default=20, show_default=True, help="Findings listed per section (text output).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def check(data_dir: Path, model: Path | None, img_size: int | None, min_prob: float, val_split: float, seed: int,
          threads: int, show: int, as_json: bool) -> None:
    """Check DATA_DIR as `edgecnn train` reads it, changing nothing.

    Reports unreadable files (with the reason); exact duplicates (same bytes) and near duplicates
    (resized or re-encoded copies: perceptual hash, confirmed on a thumbnail) within a class, across
    classes and across the train/val split (LEAKAGE: it inflates the validation accuracy); class counts
    and imbalance; images far smaller than the model's input. With -m, the images most likely
    mislabeled: predicted confidently as another class than their folder says, most suspicious first
    (a model scores images it was trained on too kindly: prefer one trained without them).

    Exit code 0 when nothing was found, 1 when something was, 2 on a usage error.

    \b
    Examples:
      edgecnn data check photos/
      edgecnn data check photos/ -m runs/photos/best.pt
      edgecnn data check photos/ -m model.onnx --json > findings.json
    """
    from ..data import DatasetError
    from ..datacheck import check_dataset
    from .common import echo_json

    if img_size is None and model is None:
        try:
            from ..defaults import DEFAULT_ARCH
            from ..models import model_info

            img_size = model_info(DEFAULT_ARCH).default_size
        except ModuleNotFoundError:  # base install without torch: no size to compare with
            img_size = None
    if model is not None and model.suffix not in (".pt", ".pth", ".onnx"):
        raise click.BadParameter(f"{model}: expected a .pt checkpoint or an .onnx model", param_hint="-m/--model")
    try:
        report = check_dataset(data_dir, model=model, input_size=img_size, val_split=val_split, seed=seed,
                               threads=threads, min_prob=min_prob)
    except DatasetError as exc:
        raise click.UsageError(str(exc)) from None
    if as_json:
        echo_json(report.to_dict())
    else:
        for line in _report_lines(report, show):
            click.echo(line)
    if report.problems:
        raise SystemExit(1)


def _report_lines(report, show: int) -> list[str]:
    from ..datacheck import IMBALANCE_RATIO

    lines = [f"{report.root}: {report.files} images, {len(report.labels)} classes, split: {report.split} "
             f"(checked in {report.seconds:.1f} s)"]
    leaks = report.leaks
    if leaks:
        n = sum(sum(1 for s in d["splits"] if s == "val") for d in leaks)
        lines.append(f"LEAKAGE: {len(leaks)} group(s) of duplicates span train and val ({n} validation image(s)); "
                     "the validation accuracy is inflated until they are removed from one side")
    width = max(len(label) for label in report.labels) + 2
    lines.append(f"{'class':<{width}} {'train':>7} {'val':>6}")
    for label, c in report.classes.items():
        lines.append(f"{label:<{width}} {c['train']:>7d} {c['val']:>6d}")
    imb = report.imbalance
    if imb.get("problem"):
        if imb.get("no_val"):
            lines.append(f"IMBALANCE: no validation images for {', '.join(imb['no_val'])}")
        if imb.get("ratio") is None or imb["ratio"] >= IMBALANCE_RATIO:
            lines.append(f"IMBALANCE: {imb['largest']} has {imb['ratio']}x the training images of {imb['smallest']}")
    sections = [
        ("unreadable file(s)", report.unreadable, len(report.unreadable), lambda u: f"  {u['path']}: {u['error']}"),
        ("duplicate group(s)", report.duplicates, len(report.duplicates), _dup_line),
        (f"image(s) far smaller than the {report.input_size}px input", report.small, report.small_count,
         lambda s: f"  {s['path']}: {s['size'][0]}x{s['size'][1]}"),
        ("likely mislabeled image(s), most suspicious first", report.suspects, report.suspect_count,
         lambda s: f"  {s['path']}: labeled {s['label']}, predicted {s['predicted']} ({s['prob']:.1%}; "
                   f"{s['label_prob']:.1%} for {s['label']})"),
    ]
    for title, items, count, fmt in sections:
        if count:
            lines.append(f"{count} {title}:")
            lines += [fmt(item) for item in items[:show]]
            if count > show:
                lines.append(f"  ... {count - show} more (--show N, or --json for all)")
    lines.append(f"{report.problems} problem(s) found" if report.problems else "no problems found")
    return lines


def _dup_line(d: dict) -> str:
    where = []
    if d["across_splits"]:
        where.append("LEAK train/val")
    if d["across_classes"]:
        where.append("across classes")
    tag = f" [{', '.join(where)}]" if where else ""
    return f"  {d['kind']}{tag}: " + " = ".join(d["paths"])
