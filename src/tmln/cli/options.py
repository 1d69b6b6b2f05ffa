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
precision_option = click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
    default="auto",
    show_default=True,
    help="Tumour classifier arithmetic. auto = bf16 where the device runs it natively (CUDA with bf16, "
    "CPUs with AVX512-BF16 or AMX), fp16 on older CUDA, else fp32; fp32 gives the same maps on every machine.",
)
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
