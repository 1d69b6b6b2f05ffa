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
