"""`usagg weights check FILE`: which backbone a downloaded checkpoint loads into, and its sha256.

The first thing to run on a licence-gated DINOv3 download (docs/real-data.md): the same
strict check `usagg validate` and `usagg run` make before any job (usagg/model/weights_check.py,
the backbone built on the meta device, the file memory-mapped), but without a study, trying
every registered backbone when none is named, so the answer is the `model.backbone` to write.
The sha256 comes from usagg/filehash.py's cache, the digest the job ids are made from.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from usagg.errors import UsaggError

if TYPE_CHECKING:
    from usagg.model.weights import Misfit

FileArg = Annotated[
    Path,
    typer.Argument(
        metavar="FILE", help="A checkpoint: the official DINOv3 .pth as downloaded, or a .safetensors file."
    ),
]
BackboneOpt = Annotated[
    str | None,
    typer.Option("--backbone", help="Only this backbone (`usagg registry backbones` lists them).", show_default=False),
]


VerboseOpt = Annotated[
    bool,
    typer.Option("--verbose", "-v", help="When the file fits no backbone: the keys that do not fit, for each one."),
]


def matching_backbones(path: Path, backbone: str | None, verbose: bool = False) -> dict[str, int]:
    """{backbone: tensors loaded} for each registered backbone the file loads into strictly (`backbone` alone if
    given); UsaggError naming the file and why it fits none (an unreadable file says so once)."""
    from usagg.model.weights import probe_backbones, read_checkpoint, weights_file_problem
    from usagg.model.weights_check import check_weights
    from usagg.model.zoo import BACKBONES
    from usagg.names import unknown_name

    names = BACKBONES.names()  # plug-ins loaded: a plug-in backbone is tried too
    if backbone is not None and backbone not in names:
        raise UsaggError(f"--backbone: {unknown_name('backbone', backbone, names)}")
    problem = weights_file_problem(path, backbone or "", in_spec=False)  # this command's advice, not model.weights'
    if problem is not None:
        raise UsaggError(problem)
    if backbone is not None:
        return {backbone: check_weights(path, backbone)}
    raw = read_checkpoint(path, mmap=True)  # a text file or a truncated download: one error, not one per backbone
    fits, misfits = probe_backbones(raw, path)
    if not fits:
        raise UsaggError(_fits_none(raw, path, misfits, verbose))
    return fits


def _fits_none(raw: dict, path: Path, misfits: list[Misfit], verbose: bool) -> str:
    """What the file is (when its keys tell a known other format) or what to give instead (the same file again when
    it is the closest backbone's with tensors missing), then the closest backbone's misfit in one line, or
    (`verbose`) every backbone's: five key lists would bury the fix."""
    from usagg.model.weights import foreign_format

    closest = max(misfits, key=lambda m: m.closeness())
    if verbose:
        detail = "; ".join(f"{m.backbone}: {m.text()}" for m in misfits)
    else:
        detail = f"the closest, {closest.backbone}: {closest.text(2)}; --verbose lists every backbone's keys"
    none = f"loads into none of the {len(misfits)} registered backbones ({detail})"
    foreign = foreign_format(raw, path)
    if foreign:
        return f"{foreign} It {none}."
    if closest.incomplete():  # the closest backbone's own file, tensors missing: not another model's
        again = closest.download_again()
        return f"The weights file {path} {none}. {again[0].upper()}{again[1:]}."
    return (
        f"The weights file {path} {none}. Give an official DINOv3 ViT checkpoint (ViT-S/16, ViT-S+/16, ViT-B/16 or "
        "ViT-L/16), not a ConvNeXt, a distilled head or another model's weights."
    )


def check(file: FileArg, backbone: BackboneOpt = None, verbose: VerboseOpt = False) -> None:
    """Check a weights file: the backbone it loads into (each registered one tried), its sha256.

    The strict load of `usagg run` (every tensor, every shape) on the meta device: no memory, no download.

    Exits 2 with one paragraph when the file fits no backbone: what the file is when its keys tell (a Hugging Face
    transformers or DINOv2 file), and the closest backbone's misfit (--verbose: every backbone's).

    Example: usagg weights check ~/w/dinov3_vitb16.pth --backbone dinov3_base
    """
    from rich.markup import escape

    from usagg.cli.display import line_console
    from usagg.filehash import file_sha256

    file = file.expanduser()  # a quoted '~/w.pth' reaches here unexpanded; the spec's model.weights expands it too
    fits = matching_backbones(file, backbone, verbose)
    out = line_console(highlight=False)
    for name, tensors in fits.items():
        out.print(f"[green]ok[/]: {escape(str(file))} fits backbone [bold]{name}[/] ({tensors} tensors, strict)")
    out.print(f"sha256: {file_sha256(file)}", soft_wrap=True)
    out.print(f"in a study: {study_snippet(next(iter(fits)), file.resolve())}", soft_wrap=True, markup=False)


def study_snippet(backbone: str, path: Path) -> str:
    """`model: {backbone: ..., weights: ...}` as YAML writes it, so any path reads back as itself (a path with ', '
    or ' #' pasted bare is another mapping or a comment)."""
    import yaml

    model = yaml.safe_dump(
        {"backbone": backbone, "weights": str(path)}, default_flow_style=True, width=1 << 30, allow_unicode=True
    )
    return f"model: {model.strip()}"


def register(app: typer.Typer) -> None:
    """Add the `weights` sub-app (`usagg weights check`)."""
    sub = typer.Typer(
        name="weights",
        help="Check model weights files (DINOv3 checkpoints).\n\n"
        "Example: usagg weights check ~/w/dinov3_vitb16.pth --backbone dinov3_base",
        no_args_is_help=True,
    )
    sub.command("check")(check)
    app.add_typer(sub, name="weights")
