"""Node U-Net training steps in float32 and in bf16 autocast, side by side (the precision `tmln train nodes` picks).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/node_training_precision.py \\
        --out benchmarks/results/node_training_precision.md

The network is pcam-nodes' (its card's U-Net, bundled weights), in training mode, on random crops of 256 and
512 px (its stage-1/2 and stage-3 crops at 4 µm/px), batch 8, AdamW, the loss computed in float32 as in
training. Each step runs through ``tmln.train.common.Amp``, as training does: ``cpu_bf16=True`` is what
``train_nodes`` asks for; on a CPU without native bf16 that row runs float32 too. The two precisions alternate
(float32, bf16, float32, bf16, ...), so a machine busy for a moment slows both alike; the median is reported.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from common import cpu_name, emit
from tmln.device import native_bf16
from tmln.models.unet import load_unet
from tmln.train.common import Amp


def step_seconds(net, amp: Amp, x: torch.Tensor, y: torch.Tensor, opt) -> float:
    """Seconds of one forward, backward and optimiser step."""
    t = time.perf_counter()
    with amp.autocast():
        out = net(x)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(out.float(), y)
    amp.step(loss, opt)
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="256,512", help="crop sizes, px")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5, help="timed steps per precision and size (after one warm-up)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    cpu = torch.device("cpu")
    net, card = load_unet("pcam-nodes", "cpu")
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-5)
    modes = {"float32": Amp(cpu, enabled=False), "bf16 autocast": Amp(cpu, cpu_bf16=True)}
    g = torch.Generator().manual_seed(0)
    rows = []
    for size in (int(s) for s in a.sizes.split(",")):
        x = torch.randn(a.batch, 3, size, size, generator=g)
        y = torch.rand(a.batch, len(card.classes), size, size, generator=g)
        times = {m: [] for m in modes}
        for rep in range(a.repeats + 1):
            for m, amp in modes.items():
                s = step_seconds(net, amp, x, y, opt)
                if rep:  # the first step of each precision warms up
                    times[m].append(s)
        med = {m: statistics.median(v) for m, v in times.items()}
        rows.append((size, med["float32"], med["bf16 autocast"]))
    bf16 = modes["bf16 autocast"].enabled
    lines = [
        "# Node U-Net training steps: float32 vs bf16 autocast (issue 15)", "",
        "Command: `OMP_NUM_THREADS=2 .venv/bin/python benchmarks/node_training_precision.py --out "
        "benchmarks/results/node_training_precision.md`  ",
        f"Machine: {cpu_name()}, {torch.get_num_threads()} torch threads; native bf16 (AVX512-BF16 / AMX): "
        f"{'yes' if native_bf16(cpu) else 'no'}{'' if bf16 else ' (so both rows ran float32)'}  ",
        f"Network: pcam-nodes' U-Net ({card.architecture}), training mode, batch {a.batch}; median of {a.repeats} steps "
        "each, the precisions alternating.", "",
        "| crop px | float32 s / step | bf16 autocast s / step | float32 / bf16 |",
        "|---|---|---|---|",
    ]
    lines += [f"| {size} | {f:.2f} | {b:.2f} | **{f / b:.2f}x** |" for size, f, b in rows]
    lines += ["", "`tmln train nodes` runs bf16 autocast on such CPUs (the card's `training.amp` says so) and float32 "
              "on others; CUDA runs bf16 (fp16 with loss scaling where bf16 is missing).", ""]
    emit("\n".join(lines), a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
