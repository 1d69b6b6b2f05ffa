"""Row-streaming execution of a fully convolutional network over a tall strip.

A strip of ``H × W`` px (``H`` as tall as the tissue needs) is fed to the network in horizontal
bands, and every layer computes each of its output rows exactly once, keeping only the few rows
its consumers still need (the kernel overlap). The result equals running the network on the whole
strip at once (same arithmetic, up to float rounding), but memory is that of a few bands and the
receptive-field margin is paid once per strip edge instead of once per tile edge: with tiles, each
tile recomputes ``lo + hi`` cells of margin on every side (13 cells of 32 px for a ResNet-18, 40 %
of a 2048 px tile); a streamed strip pays it only at its own top, bottom, left and right.

The network is traced with ``torch.fx``. Nodes are either *windowed* (``Conv2d``, ``MaxPool2d``,
``AvgPool2d``: output row ``o`` reads input rows ``o·s − p … o·s − p + k − 1``; zero (or −∞ for max
pooling) rows stand in for the padding beyond the strip's top and bottom) or *row-wise* (anything
else whose output rows equal its input rows: activations, additions, concatenations, 1×1 heads
with no stride…). ``StreamedNet.check`` verifies this classification against real forward passes
at two heights, so a network the executor cannot reproduce is refused (the engine then tiles).
In-place operations are made out-of-place (buffers are shared between consumers). Two rewrites keep
the values bit for bit and save memory traffic: a ReLU (and a residual addition) is applied in place to
the fresh output of the convolution it alone reads, and a pooling layer that alone reads a
convolution runs as one window with it (``_compose_pools``: a ResNet stem's overlap row is recomputed
instead of its wide output being kept).
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import fx, nn
from torch.nn import functional as F

from tmln.models import winograd

_INPLACE_FUNCS = {operator.iadd: operator.add, operator.imul: operator.mul, operator.isub: operator.sub,
                  torch.relu_: torch.relu}


try:  # quantised convolutions (int8 backend): windowed like nn.Conv2d
    from torch.ao.nn.quantized import Conv2d as _QCONV
except ImportError:  # pragma: no cover
    _QCONV = None
_WINDOWED = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d) + ((_QCONV,) if _QCONV is not None else ())


class _Tracer(fx.Tracer):
    """``torch.fx``'s tracer, with Winograd convolutions kept whole (leaves, like ``nn.Conv2d``)."""

    def is_leaf_module(self, m, qualname):
        return isinstance(m, winograd.WinogradConv2d) or super().is_leaf_module(m, qualname)


class NotStreamable(Exception):
    """The network has an operation the row-streaming executor cannot reproduce exactly."""


@dataclass
class _Node:
    name: str
    kind: str  # "input" | "window" | "point" | "output" | "const" (a parameter used as a value: fn holds it)
    inputs: list  # indices of tensor inputs
    fn: Callable | None = None
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    k: int = 1  # rows: kernel (effective, dilation included), stride, padding
    s: int = 1
    p: int = 0
    pad_value: float = 0.0
    conv: bool = False  # a float convolution (its output is a fresh tensor a ReLU may overwrite)
    pads_rows: bool = False  # fn(x, top, bottom) adds the rows of zero padding itself
    relu_fn: Callable | None = None  # fn with the ReLU that follows it fused in
    consumers: list = field(default_factory=list)


class StreamedNet:
    """A traced, out-of-place copy of ``module`` that can run on a strip band by band.

    ``run(bands, height, width)`` yields ``(first_row, rows)`` blocks of the network's output for
    a strip ``height`` px tall and ``width`` px wide whose input arrives as a sequence of float
    ``(1, C, h_i, width)`` bands (top to bottom, summing to ``height``).
    """

    def __init__(self, module: nn.Module):
        module = copy.deepcopy(module).eval()
        for m in module.modules():
            if hasattr(m, "inplace"):
                m.inplace = False
        try:
            gm = fx.GraphModule(module, _Tracer().trace(module))
        except Exception as e:  # pragma: no cover - untraceable network
            raise NotStreamable(f"cannot trace: {e}") from e
        self.gm = gm
        mods = dict(gm.named_modules())
        index: dict = {}
        self.nodes: list[_Node] = []
        for node in gm.graph.nodes:
            ins = [index[a] for a in node.all_input_nodes]
            if node.op == "placeholder":
                if self.nodes:
                    raise NotStreamable("more than one input")
                n = _Node(node.name, "input", [])
            elif node.op == "output":
                if len(ins) != 1:
                    raise NotStreamable("more than one output")
                n = _Node(node.name, "output", ins)
            elif node.op == "call_module" and isinstance(mods[node.target], _WINDOWED):
                n = _window(node.name, mods[node.target], ins)
            elif node.op == "get_attr":  # e.g. the scale and zero point of an int8 network's requantisation
                n = _Node(node.name, "const", [], fn=_attr(gm, node.target))
            else:
                n = _Node(node.name, "point", ins, *_pointwise(node, mods))
            if node.op not in ("placeholder", "output", "get_attr"):
                n.args = node.args
                n.kwargs = dict(node.kwargs)
            index[node] = len(self.nodes)
            self.nodes.append(n)
        for i, n in enumerate(self.nodes):
            for j in n.inputs:
                self.nodes[j].consumers.append(i)
        self._arg_index = index
        self.fused = _fuse_in_place(self.nodes)
        self.composed = _compose_pools(self.nodes)

    # ------------------------------------------------------------------ geometry
    def heights(self, height: int) -> list[int]:
        """Output rows of every node for an input ``height`` rows tall (the formula the executor
        relies on; ``check`` compares it with real forward passes)."""
        hs: list[int] = []
        for n in self.nodes:
            if n.kind == "input":
                hs.append(height)
            elif n.kind == "const":
                hs.append(None)
            elif n.kind == "window":
                hs.append((hs[n.inputs[0]] + 2 * n.p - n.k) // n.s + 1)
            else:
                h = {hs[j] for j in n.inputs if self.nodes[j].kind != "const"}
                hs.append(h.pop() if len(h) == 1 else -1)  # -1: no single input height (refused)
        return hs

    def check(self, width: int = 96, heights: tuple[int, ...] = (160, 231), channels: int = 3) -> None:
        """Raise ``NotStreamable`` unless streamed output equals the whole forward pass on random
        inputs of two heights (shape formula and values)."""
        g = torch.Generator().manual_seed(0)
        p = next(self.gm.parameters(), None)
        dev = p.device if p is not None else torch.device("cpu")
        for h in heights:
            x = torch.randn(1, channels, h, width, generator=g).to(dev)
            with torch.no_grad():
                full, shapes = self._forward_shapes(x)
                if len(shapes) != len(self.nodes) or any(
                        f is None or s != f for s, f, n in zip(self.heights(h), shapes, self.nodes) if n.kind not in ("output", "const")):
                    raise NotStreamable("layer heights differ from the streaming formula")
                bands = [x[:, :, i : i + 37] for i in range(0, h, 37)]
                try:
                    out = torch.cat([rows for _, rows in self.run(iter(bands), h, width, chunk=1)], 2)
                except (NotStreamable, ValueError, RuntimeError, TypeError, IndexError) as e:
                    raise NotStreamable(f"streaming failed: {e}") from e
            if out.shape != full.shape or not torch.allclose(out, full, rtol=1e-4, atol=1e-4 * float(full.abs().max()) + 1e-6):
                raise NotStreamable("streamed output differs from the whole forward pass")

    def _forward_shapes(self, x):
        shapes: list = []

        class Rec(fx.Interpreter):
            def run_node(self_, node):
                r = super().run_node(node)
                shapes.append(r.shape[2] if isinstance(r, torch.Tensor) and r.dim() == 4 else None)
                return r

        out = Rec(self.gm).run(x)
        return out, shapes

    # ------------------------------------------------------------------ execution
    def run(self, bands: Iterator[torch.Tensor], height: int, width: int, chunk: int = 4) -> Iterator:
        """Yield ``(first_row, (1, C, rows, W_out) tensor)`` of the output, ``chunk`` rows at a time."""
        nodes = self.nodes
        hs = self.heights(height)
        if min(v for v in hs if v is not None) <= 0:
            raise ValueError(f"strip of {height} rows is too short for this network")
        buf: list = [None] * len(nodes)  # tensor of rows [start, end)
        start = [0] * len(nodes)
        end = [0] * len(nodes)
        out_i = len(nodes) - 1
        src = nodes[out_i].inputs[0]

        def rows(j, a, b):
            return buf[j][:, :, a - start[j] : b - start[j]]

        def evict(j):
            if nodes[j].kind == "const":
                return
            keep = min((_first_needed(nodes[c], end[c]) for c in nodes[j].consumers if c != out_i), default=end[j])
            keep = max(start[j], min(keep, end[j]))
            if keep > start[j]:
                buf[j] = buf[j][:, :, keep - start[j] :]
                start[j] = keep

        def append(j, y):
            buf[j] = y if buf[j] is None or buf[j].shape[2] == 0 else _cat_rows([buf[j], y])
            end[j] += y.shape[2]

        def ensure(j, b):
            b = min(b, hs[j])
            if end[j] >= b:
                return
            n = nodes[j]
            a = end[j]
            if n.kind == "input":
                while end[j] < b:
                    band = next(bands)
                    if band.shape[3] != width:
                        raise ValueError(f"band width {band.shape[3]} != strip width {width}")
                    append(j, band)
                return
            if n.kind == "window":
                i = n.inputs[0]
                lo, hi = a * n.s - n.p, (b - 1) * n.s - n.p + n.k
                ensure(i, hi)
                x = rows(i, max(lo, 0), min(hi, hs[i]))
                top, bottom = max(0, -lo), max(0, hi - hs[i])
                y = _window_rows(n, x, top, bottom)
            else:
                sl = {}
                for i in n.inputs:
                    if nodes[i].kind == "const":
                        sl[i] = nodes[i].fn
                    else:
                        ensure(i, b)
                        sl[i] = rows(i, a, b)
                args = fx.node.map_arg(n.args, lambda nd: sl[self._arg_index[nd]])
                kwargs = fx.node.map_arg(n.kwargs, lambda nd: sl[self._arg_index[nd]])
                y = n.fn(*args, **kwargs)
            if y.shape[2] != b - a:  # pragma: no cover - guarded by check()
                raise NotStreamable(f"{n.name}: produced {y.shape[2]} rows, expected {b - a}")
            append(j, y)
            for i in n.inputs:
                evict(i)

        h_out = hs[src]
        try:
            for r in range(0, h_out, chunk):
                b = min(h_out, r + chunk)
                ensure(src, b)
                yield r, rows(src, r, b)
                start_keep = b
                buf[src] = buf[src][:, :, start_keep - start[src] :]
                start[src] = start_keep
                evict(src)
        finally:  # the closures above form a reference cycle: free the rows now, not at the next collection
            buf[:] = [None] * len(buf)


def _fuse_in_place(nodes: list) -> int:
    """Layer fusions that keep the values bit for bit and save a tensor and a pass over memory each:
    an addition is computed into the fresh output of the float convolution it alone consumes, and a
    ReLU is applied in place to the fresh output of the float convolution or addition it alone
    consumes (its node then passes the rows through). Returns how many ReLUs were fused."""
    adds = {i for i, n in enumerate(nodes) if n.kind == "point" and n.fn in _ADDS and len(n.inputs) == 2
            and not n.kwargs}
    for i in adds:
        n = nodes[i]
        for pos in (0, 1):
            p = nodes[n.inputs[pos]]
            if p.kind == "window" and p.conv and p.consumers == [i]:
                n.fn = _add_into(n.fn, pos)
                break
    n_fused = 0
    for i, n in enumerate(nodes):
        if n.kind != "point" or len(n.inputs) != 1 or not _is_relu(n.fn):
            continue
        j = n.inputs[0]
        p = nodes[j]
        if p.consumers != [i] or not (p.kind == "window" and p.conv or j in adds):
            continue
        p.fn, n.fn = p.relu_fn or _then_relu(p.fn), _rows_of
        n_fused += 1
    return n_fused


def _window_rows(n: _Node, x, top: int, bottom: int):
    """Windowed node ``n`` on input rows ``x`` with ``top`` / ``bottom`` rows of padding beyond the
    strip: added here (``n.pad_value``) unless the node pads rows itself."""
    if n.pads_rows:
        return n.fn(x, top, bottom)
    return n.fn(_pad_rows(x, top, bottom, n.pad_value) if top or bottom else x)


def _compose_pools(nodes: list) -> int:
    """A pooling layer that alone reads a float convolution (through fused-ReLU pass-throughs, e.g. a
    ResNet's stem: convolution, ReLU, 3x3/2 max pooling) becomes one windowed node that computes the
    convolution's rows and pools them at once. The pooling's overlap (``k - s`` convolution rows per
    step, 1 in a ResNet stem) is recomputed instead of kept, so the convolution's wide output is never
    copied into a buffer of kept rows. Returns how many were composed; the convolution and its
    pass-throughs are left without consumers (never run)."""
    n_composed = 0
    for ci, c in enumerate(nodes):
        if c.kind != "window" or c.conv or len(c.inputs) != 1:
            continue
        chain, j = [], c.inputs[0]
        while nodes[j].kind == "point" and nodes[j].fn is _rows_of and len(nodes[j].inputs) == 1 \
                and len(nodes[j].consumers) == 1:
            chain.append(j)
            j = nodes[j].inputs[0]
        conv = nodes[j]
        if conv.kind != "window" or not conv.conv or len(conv.consumers) != 1 or len(conv.inputs) != 1:
            continue
        src = conv.inputs[0]
        c.fn = _conv_then_pool(conv, c)
        c.k, c.s, c.p = conv.k + (c.k - 1) * conv.s, conv.s * c.s, conv.p + c.p * conv.s
        c.pad_value, c.pads_rows, c.inputs = conv.pad_value, True, [src]
        nodes[src].consumers = [ci if i == j else i for i in nodes[src].consumers]
        for dead in [j, *chain]:
            nodes[dead].consumers = []
        n_composed += 1
    return n_composed


def _conv_then_pool(conv: _Node, pool: _Node):
    """``pool(conv(x))`` on the rows of the composed window (see ``_compose_pools``): ``top`` /
    ``bottom`` rows beyond the strip are zero for the convolution, and the convolution rows that lie
    beyond its own padding (rows the pooling pads) are set to the pooling's padding value."""
    pool_fn, value = pool.fn, pool.pad_value
    p, s = conv.p, conv.s

    def fn(x, top=0, bottom=0):
        y = _window_rows(conv, x, top, bottom)
        n_top = -(-(top - p) // s) if top > p else 0
        n_bottom = -(-(bottom - p) // s) if bottom > p else 0
        if n_top:
            y[:, :, :n_top] = value
        if n_bottom:
            y[:, :, y.shape[2] - n_bottom:] = value
        return pool_fn(y)

    return fn


def _add_into(fn, pos: int):
    """``a + b`` computed into operand ``pos``, a convolution's fresh rows that nothing else reads: the
    same sum (float addition commutes exactly), no new tensor."""
    def add(*args):
        if len(args) == 2:
            a, b = args[pos], args[1 - pos]
            if (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                    and a.dtype == b.dtype and not a.is_quantized):
                return a.add_(b)
        return fn(*args)

    return add


_ADDS = (operator.add, torch.add)


def _is_relu(fn) -> bool:
    return isinstance(fn, nn.ReLU) or fn in (torch.relu, F.relu)


def _then_relu(fn):
    def fused(*args, **kwargs):
        return fn(*args, **kwargs).relu_()  # a fresh float tensor (convolution or addition output)

    return fused


def _rows_of(x, *_, **__):
    """A fused ReLU's node: its input rows, already rectified."""
    return x


def _first_needed(consumer: _Node, next_row: int) -> int:
    """The first input row ``consumer`` can still ask for once it has produced ``next_row`` rows."""
    if consumer.kind == "window":
        return max(0, next_row * consumer.s - consumer.p)
    return next_row


def _pad_rows(x, top: int, bottom: int, value: float):
    parts = []
    full = x.new_full if not x.is_quantized else (lambda shape, v: _quantized_full(x, shape, v))
    if top:
        parts.append(full((x.shape[0], x.shape[1], top, x.shape[3]), value))
    parts.append(x)
    if bottom:
        parts.append(full((x.shape[0], x.shape[1], bottom, x.shape[3]), value))
    y = _cat_rows(parts)
    return y.contiguous(memory_format=torch.channels_last) if x.is_contiguous(memory_format=torch.channels_last) else y


_QMIN = {torch.quint8: 0, torch.qint8: -128, torch.qint32: -(2 ** 31)}


def _cat_rows(parts):
    """``torch.cat(parts, 2)``; for quantised tensors (one scale and zero point: rows of one layer) the
    integer codes are concatenated, as ``torch.cat`` would dequantise and requantise every element
    (measured: 47 % of an int8 strip's time)."""
    x = parts[0]
    if not x.is_quantized:
        return torch.cat(parts, 2)
    codes = torch.cat([p.int_repr() for p in parts], 2)
    return torch._make_per_tensor_quantized_tensor(codes, x.q_scale(), x.q_zero_point())


def _quantized_full(x, shape, value: float):
    """Rows of ``value`` in ``x``'s (per-tensor) quantisation; -inf becomes the lowest code (max pooling:
    it then loses to every real value, as -inf does)."""
    scale, zp = x.q_scale(), x.q_zero_point()
    if value == float("-inf"):
        value = (_QMIN[x.dtype] - zp) * scale
    return torch.quantize_per_tensor(torch.full(shape, float(value)), scale, zp, x.dtype)


def _attr(gm, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _window(name: str, m: nn.Module, ins: list) -> _Node:
    """A windowed layer: rows handled by the executor, columns padded by the layer itself."""
    k, s = _pair(m.kernel_size), _pair(m.stride)
    d = _pair(getattr(m, "dilation", 1)) if not isinstance(m, nn.AvgPool2d) else (1, 1)
    p = getattr(m, "padding", 0)
    if isinstance(p, str):
        raise NotStreamable(f"{name}: padding={p!r}")
    p = _pair(p)
    if getattr(m, "ceil_mode", False):
        raise NotStreamable(f"{name}: ceil_mode")
    if _QCONV is not None and isinstance(m, _QCONV):  # int8 (tmln.models.backend): rows padded by the executor
        if m.padding_mode != "zeros":
            raise NotStreamable(f"{name}: padding_mode={m.padding_mode}")
        q = copy.deepcopy(m)
        q.padding = (0, p[1])
        q.set_weight_bias(m.weight(), m.bias())  # repacks the weights with the new padding

        def fn(x):
            return q(x)

        value = 0.0
    elif isinstance(m, winograd.WinogradConv2d):  # float32 by NNPACK's Winograd kernels (tmln.models.winograd)
        kern = m.kernels()  # transformed once; NNPACK pads the rows beyond the strip and may apply the ReLU

        def fn(x, top=0, bottom=0):
            return kern(x, top, bottom)

        def relu_fn(x, top=0, bottom=0):
            return kern(x, top, bottom, relu=True)

        return _Node(name, "window", ins, fn, k=3, s=1, p=p[0], conv=True, pads_rows=True, relu_fn=relu_fn)
    elif isinstance(m, nn.Conv2d):
        if m.padding_mode != "zeros":
            raise NotStreamable(f"{name}: padding_mode={m.padding_mode}")
        w, bias, groups = m.weight, m.bias, m.groups

        def fn(x):
            return F.conv2d(x, w, bias, s, (0, p[1]), d, groups)

        value = 0.0
    elif isinstance(m, nn.MaxPool2d):
        def fn(x):
            return F.max_pool2d(x, k, s, (0, p[1]), d)

        value = float("-inf")
    else:
        if p[0] and not m.count_include_pad:
            raise NotStreamable(f"{name}: count_include_pad=False")
        if m.divisor_override is not None:
            raise NotStreamable(f"{name}: divisor_override")

        def fn(x):
            return F.avg_pool2d(x, k, s, (0, p[1]), count_include_pad=m.count_include_pad)

        value = 0.0
    return _Node(name, "window", ins, fn, k=d[0] * (k[0] - 1) + 1, s=s[0], p=p[0], pad_value=value,
                 conv=isinstance(m, nn.Conv2d))


def _pointwise(node, mods) -> tuple:
    """(fn,) for a row-wise node: a module, function or method call applied to row slices."""
    if node.op == "call_module":
        m = mods[node.target]
        if isinstance(m, (nn.Linear, nn.Flatten, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            raise NotStreamable(f"{node.name}: {type(m).__name__} mixes rows")
        return (m,)
    if node.op == "call_function":
        return (_INPLACE_FUNCS.get(node.target, node.target),)
    if node.op == "call_method":
        name = node.target
        if name.endswith("_") and not name.startswith("_"):
            name = name[:-1]  # in-place method -> out-of-place

        def fn(obj, *a, **kw):
            return getattr(obj, name)(*a, **kw)

        return (fn,)
    raise NotStreamable(f"{node.name}: {node.op}")  # pragma: no cover
