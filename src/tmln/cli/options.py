"""Options shared by several commands (one definition, one help text)."""

from __future__ import annotations

import click

mpp_option = click.option(
    "--mpp",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Level-0 µm/px of the slide, overriding the file's own value (needed when the file has none).",
)
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar; only errors are printed.")
force_option = click.option("--force", is_flag=True, help="Redo slides that a previous run already finished.")
device_option = click.option(
    "--device",
    default="auto",
    show_default=True,
    help="torch device: auto (CUDA if available, else CPU), cpu, cuda, cuda:1, ...",
)


def _precision_option(help: str):
    """``--precision`` with the choices of ``tmln.models.backend``; ``help`` says whose arithmetic."""
    return click.option("--precision", type=click.Choice(["auto", "fp32", "fp32-winograd", "bf16", "fp16", "int8"]), default="auto",
                        show_default=True, help=help)


precision_option = _precision_option(
    "Tumour classifier arithmetic. auto = bf16 where the device runs it natively (CUDA with bf16, "
    "CPUs with AVX512-BF16 or AMX), fp16 on older CUDA, fp32-winograd on CPUs without AVX-512 (float32, "
    "3x3 convolutions by NNPACK's Winograd kernels: ~1.2x fp32 there, probabilities within 1e-5), else fp32; "
    "int8 = quantised, on x86 CPUs with AVX2 (about 2x fp32 there; calibrated on tiles of each slide, recorded "
    "in the map's sidecar; changes ~1 % of thresholded pixels, so never chosen by auto); fp32 (direct "
    "convolutions) gives the same maps on every machine.")
node_precision_option = _precision_option(
    "Node U-Net arithmetic, chosen as tumour-map's except that auto keeps float32 arithmetic on every CPU "
    "(its reduced-precision label maps were not validated): auto = fp32-winograd on CPUs without AVX-512, fp32 "
    "on other CPUs, bf16 on CUDA with bf16, else fp16; int8 is calibrated on the slide's first tiles and "
    "recorded in node_labels.json.")
map_loader_workers_option = click.option(
    "--loader-workers", "workers", type=click.IntRange(min=0), default=None,
    help="DataLoader processes reading tiles (default: none on CPUs of up to 4 cores, where they would "
         "compete with the model; on CUDA half the CPUs, at most 8; 0 = read in the main process).")
out_dir_option = click.option(
    "--out", "out", required=True, type=click.Path(file_okay=False), help="Output folder (created if missing)."
)
staging_option = click.option(
    "--staging",
    type=click.Choice(["gastric", "breast", "camelyon17", "colorectal"]),
    default="gastric",
    show_default=True,
    help="Staging system of n_stage: gastric (AJCC 8: N0-N3b by metastatic-node count), breast (AJCC 8 pN by "
    "macro/micro/ITC nodes: N0, N0(i+), N1mi, N1a, N2a, N3a), camelyon17 (the challenge's patient pN), colorectal "
    "(AJCC 8: N0, N1a, N1b, N2a, N2b). Rules and sources: docs/measurements.md.",
)

# ----------------------------------------------------------------------------------------- vocabulary
# One name per meaning across commands (docs/cli.md). Every option name used by two or more commands
# is listed here with its one meaning and a pattern its help text must match in every command
# (tests/test_cli_vocabulary.py walks all commands and checks it).
VOCABULARY: dict[str, tuple[str, str]] = {
    "--mpp": ("level-0 µm/px of the slide(s), overriding (or, for phantoms, written into) the file", r"^level-0 µm/px"),
    "--model-mpp": ("the model's input resolution, µm/px (training)", r"model's input resolution"),
    "--patches-mpp": ("µm/px of the patch images given", r"µm/px of the (patch )?images"),
    "--workers": ("processes working on slides in parallel, one slide each", r"slides (processed|written) in parallel"),
    "--loader-workers": ("DataLoader processes reading and decoding the model's input", r"dataloader"),
    "--batch-size": ("samples or tiles per model step", r"batch|forward pass"),
    "--device": ("torch device", r"torch device"),
    "--precision": ("the model's arithmetic", r"arithmetic"),
    "--out": ("where the outputs go", r"output|to write"),
    "--quiet": ("no progress output", r"no progress"),
    "-q": ("no progress output", r"no progress"),
    "--seed": ("random seed", r"seed"),
    "--epochs": ("training epochs", r"epoch"),
    "--lr": ("learning rate", r"learning rate"),
    "--val-fraction": ("patients held out for validation", r"held out for validation"),
    "--no-resume": ("start training afresh", r"start afresh"),
    "--annotations": ("folder of annotation files per slide", r"folder .*(annotations|outlines)"),
    "--outlines": ("outline files of the one slide given (tmln view SLIDE)", r"GeoJSON/XML outlines"),
    "--mln-rule": ("which nodes count as metastatic (ajcc: micro/macro; any: any tumour)", r"metastatic"),
    "--node-annotations": ("node outlines (a file for one slide, a folder for a cohort)", r"node outlines"),
    "--tumour-annotations": ("tumour outlines", r"tumour outlines"),
    "--model": ("the command's model: bundled name or model directory", r"bundled (model )?name"),
    "--node-model": ("node segmentation model", r"node .*model"),
    "--tumour-model": ("tumour classifier model", r"tumour .*model"),
    "--min-node-area": ("smallest node kept, mm²", r"smallest node kept, mm²"),
    "--no-split": ("do not split touching nodes", r"do not split touching nodes"),
    "--method": ("tumour-map inference method", r"stream .*dense .*grid"),
    "--tile-size": ("inference tile (or strip) size, px", r"tile"),
    "--n-boot": ("bootstrap replicates", r"bootstrap"),
    "--patients": ("number of phantom patients", r"(number of|phantom) patients"),
    "--predictions": ("predictions to evaluate", r"predict"),
    "--truth": ("reference annotations", r"annotation|reference|\.xml"),
    "--labels": ("reference labels", r"label"),
    "--slides": ("the slides: a slides table, or a folder", r"slides table|folder of slides"),
    "--staging": ("staging system of n_stage", r"staging system"),
    "--threshold": ("P(tumour) threshold calling tumour", r"tumour"),
    "--init": ("initial weights to fine-tune", r"initial weights"),
    "--average-epochs": ("stochastic weight averaging over the last N epochs", r"weight averaging"),
}

# Deprecated spellings kept for one release: (command, old name, new name). They are hidden from
# --help, print a warning when used, and set the new option's value.
DEPRECATED_ALIASES: tuple[tuple[str, str, str], ...] = (
    ("train tumour", "--mpp", "--model-mpp"),
    ("train nodes", "--mpp", "--model-mpp"),
    ("predict-patches", "--mpp", "--patches-mpp"),
    ("train tumour", "--workers", "--loader-workers"),
    ("train nodes", "--workers", "--loader-workers"),
    ("predict-patches", "--workers", "--loader-workers"),
    ("tumour-map", "--workers", "--loader-workers"),
)

_ALIAS_KEY = "tmln.deprecated_aliases"


class Command(click.Command):
    """A command whose deprecated aliases (``deprecated_alias``) set their replacement's value."""

    def invoke(self, ctx):
        from click.core import ParameterSource

        for dest, (old, new, value) in ctx.meta.pop(_ALIAS_KEY, {}).items():
            if ctx.get_parameter_source(dest) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
                raise click.UsageError(f"{old} is a deprecated alias of {new}: give only {new}", ctx)
            ctx.params[dest] = value
        return super().invoke(ctx)


def deprecated_alias(old: str, new: str, dest: str, type=None, meaning: str = ""):
    """Hidden option ``old`` that warns and sets option ``new`` (parameter ``dest``); the command must
    use ``cls=Command``. Kept for one release."""

    def callback(ctx, param, value):
        if value is None:
            return
        click.echo(f"warning: {old} is deprecated in `{ctx.command_path}`; use {new}"
                   + (f" ({meaning})" if meaning else "") + ". The old spelling will be removed in the next release.",
                   err=True)
        ctx.meta.setdefault(_ALIAS_KEY, {})[dest] = (old, new, value)

    return click.option(old, f"deprecated_{dest}", type=type, default=None, hidden=True, expose_value=False,
                        callback=callback, help=f"Deprecated alias of {new} (removed in the next release).")


loader_workers_option = click.option(
    "--loader-workers", "loader_workers", type=click.IntRange(min=0), default=0, show_default=True,
    help="DataLoader processes reading and decoding the model's input (0 = in the main process).")
seed_option = click.option("--seed", type=int, default=0, show_default=True,
                           help="Random seed (initialisation, sampling, split, augmentation).")
average_epochs_option = click.option(
    "--average-epochs", type=click.IntRange(min=0), default=0, show_default=True,
    help="Stochastic weight averaging: the mean of the weights of the last N epochs (batch-norm statistics "
         "recomputed) is validated as one more candidate. 0: off.")
