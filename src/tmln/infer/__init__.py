"""The inference core shared by the tumour classifier and the node U-Net.

``plan``: which model px to read (output grid, region of interest cells, strips, tiles, blended
tiles); ``roi``: the region of interest at the output grid; ``readers``: reading tiles of a slide at
a µm/px, in this process or in reader processes; ``precision``: arithmetic (float32, bf16/fp16
autocast, int8) and deterministic kernels; ``memory``: freed memory handed back during long runs.
``tmln.tumour.engine`` and ``tmln.nodes.infer`` run their models on it.
"""
