"""Winograd 3 × 3 convolutions in float32 on AVX2-only CPUs: NNPACK, the kernels PyTorch ships.

oneDNN runs a ResNet-18's direct float32 convolutions close to an AVX2 core's peak, so float32 can
only get faster by doing less arithmetic. Winograd's algorithm computes a 3 × 3, stride-1 convolution
from transformed 8 × 8 tiles with 2-4x fewer multiplications; NNPACK (Marat Dukhan's library, built
into the x86-64 PyTorch wheels as ``torch._nnpack_spatial_convolution``) has AVX2 + FMA kernels for it.
The arithmetic stays float32; only the rounding differs from a direct convolution (about 1e-5 of a
layer's largest output; pcam-tumour's map of real tissue moved by at most 4.9e-6 in probability, no
thresholded pixel changed: ``benchmarks/results/tumour_backends_avx2.md``).

``winograd_convs(module)`` returns a copy whose eligible convolutions (3 × 3, stride 1, dilation 1,
one group, zero padding of at most 2 px) are ``WinogradConv2d``; the others stay oneDNN's. The tumour
engine's row-streaming executor runs the same layers band by band (``tmln.tumour.stream``). Each layer
keeps its kernel transformed (``Winograd3x3``: NNPACK's own entry point through ``ctypes``; PyTorch's
wrapper transforms it on every call, half of a 512-channel layer's time on a strip's few rows), which
holds C_out × C_in × 64 floats per layer (about 270 MB for a ResNet-18).

NNPACK keeps its own thread pool, sized by ``torch.get_num_threads()`` at its first convolution.
OpenMP threads that spin after oneDNN's layers then compete with it for the cores: ``tmln`` sets
``OMP_WAIT_POLICY=PASSIVE`` before PyTorch loads where this backend is the CPU's default (unless the
variable is set; ``tmln.device.cpu_prefers_winograd``); from Python, set it before importing torch
(measured on the streamed ResNet-18: 1.36x with it, 1.09x without). Importing this module does not
load torch.
"""

from __future__ import annotations

import copy
import platform

_STATE: dict = {}


def available() -> tuple[bool, str]:
    """(True, "") where NNPACK's Winograd kernels run here (x86-64 with AVX2 + FMA, a PyTorch built
    with NNPACK), else (False, why). The first call initialises NNPACK."""
    import torch

    if "ok" not in _STATE:
        if platform.machine().lower() not in ("x86_64", "amd64"):
            _STATE["ok"] = (False, f"NNPACK's Winograd kernels need an x86-64 CPU (this is {platform.machine()})")
        elif not torch.backends.nnpack.is_available():  # also initialises NNPACK (AVX2 + FMA3 checked there)
            _STATE["ok"] = (False, "this PyTorch build or CPU has no NNPACK (x86-64 with AVX2 and FMA is needed)")
        else:
            _STATE["ok"] = (True, "")
    return _STATE["ok"]


def preferred() -> bool:
    """Whether ``precision="auto"`` picks Winograd on this CPU: NNPACK runs here and PyTorch dispatches
    to AVX2 (an AVX2-only CPU, or one capped to AVX2). With AVX-512, oneDNN's direct kernels (or bf16)
    are the measured choice, and Winograd was not measured there."""
    import torch

    return torch.backends.cpu.get_cpu_capability() == "AVX2" and available()[0]


def eligible(m) -> bool:
    """A float convolution NNPACK's Winograd kernels compute: 3 × 3, stride 1, no dilation, one group,
    zero padding of 0-2 px."""
    from torch import nn

    pad = m.padding if isinstance(m, nn.Conv2d) else None
    return (type(m) is nn.Conv2d and tuple(m.kernel_size) == (3, 3) and tuple(m.stride) == (1, 1)
            and tuple(m.dilation) == (1, 1) and m.groups == 1 and m.padding_mode == "zeros"
            and isinstance(pad, tuple) and all(0 <= p <= 2 for p in pad))


def conv(x, weight, bias, padding):
    """``F.conv2d(x, weight, bias, 1, padding)`` by NNPACK's Winograd kernels (float32, CPU; NCHW out),
    the kernels transformed on every call (``Winograd3x3`` keeps them)."""
    import torch

    return torch._nnpack_spatial_convolution(x.contiguous(), weight, bias, list(padding), [1, 1])


class Winograd3x3:
    """One 3 × 3, stride-1 convolution by NNPACK's Winograd F(6 × 6, 3 × 3) kernels, its kernel
    transformed once.

    ``torch._nnpack_spatial_convolution`` transforms the kernels on every call: with a streamed strip's
    few rows per call, that is about half of a 512-channel layer's time. Here NNPACK's own
    ``nnp_convolution_inference`` (exported by PyTorch's ``libtorch_cpu``) is called through ``ctypes``
    with the transform precomputed (NNPACK's ``precompute`` / ``reuse`` strategies), on a thread pool
    of ``torch.get_num_threads()`` threads, a workspace kept per thread, and optionally the ReLU and
    the rows of zero padding above and below done inside NNPACK. The values equal
    ``torch._nnpack_spatial_convolution``'s bit for bit (the same kernels; checked once per process on
    a small convolution, ``_nnpack()``). Where that entry point is missing, or the layer's transformed
    kernel would exceed ``PRECOMPUTE_MAX_MB``, PyTorch's wrapper runs instead (same values).
    """

    def __init__(self, weight, bias, padding):
        import torch

        self.out_channels, self.in_channels = int(weight.shape[0]), int(weight.shape[1])
        self.padding = (int(padding[0]), int(padding[1]))
        self.weight = weight.detach().float().contiguous()
        self.bias = (bias.detach().float() if bias is not None else torch.zeros(self.out_channels)).contiguous()
        self.kernel = None  # the transformed kernel (a float32 tensor as NNPACK's buffer), where precomputed
        api = _nnpack()
        if api is not None and self.out_channels * self.in_channels * 64 * 4 <= PRECOMPUTE_MAX_MB * 2 ** 20:
            self.kernel = api.transform(self.weight)

    def __call__(self, x, top: int | None = None, bottom: int | None = None, relu: bool = False):
        """Output of input ``x`` (N, C, H, W); ``top`` / ``bottom`` rows of zero padding (default: the
        layer's own), its column padding always; ``relu``: max(0, ·) applied by NNPACK."""
        import torch

        ph, pw = self.padding
        top, bottom = ph if top is None else top, ph if bottom is None else bottom
        api = _nnpack()
        if self.kernel is None or api is None or max(top, bottom, pw) > 2:
            if top or bottom:
                x = torch.nn.functional.pad(x, (0, 0, top, bottom))
            y = conv(x, self.weight, self.bias, (0, pw))
            return y.relu_() if relu else y
        x = x.contiguous()
        n, _, h, w = x.shape
        out = torch.empty(n, self.out_channels, h + top + bottom - 2, w + 2 * pw - 2)
        for i in range(n):  # NNPACK's inference entry point takes one image
            api.run(x[i], self.kernel, self.bias, out[i], self.in_channels, self.out_channels, (top, pw, bottom, pw), relu)
        return out


PRECOMPUTE_MAX_MB = 256  # a layer whose transformed kernel (C_out × C_in × 64 floats) is larger transforms per call


class _Api:
    """``nnp_convolution_inference`` and a ``pthreadpool`` from PyTorch's ``libtorch_cpu`` (ctypes)."""

    WT8X8, PRECOMPUTE, REUSE = 3, 2, 3  # nnp_convolution_algorithm_wt8x8; transform strategies

    def __init__(self):
        import ctypes
        import os
        import threading

        import torch

        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
        size_t = ctypes.c_size_t

        class Size(ctypes.Structure):
            _fields_ = [("width", size_t), ("height", size_t)]

        class Padding(ctypes.Structure):
            _fields_ = [("top", size_t), ("right", size_t), ("bottom", size_t), ("left", size_t)]

        f = lib.nnp_convolution_inference
        f.restype = ctypes.c_int
        ptr = ctypes.c_void_p
        f.argtypes = [ctypes.c_int, ctypes.c_int, size_t, size_t, Size, Padding, Size, Size, ptr, ptr, ptr, ptr, ptr,
                      ctypes.POINTER(size_t), ctypes.c_int, ptr, ptr, ptr]
        lib.pthreadpool_create.restype = ptr
        lib.pthreadpool_create.argtypes = [size_t]
        self.ctypes, self.f, self.Size, self.Padding = ctypes, f, Size, Padding
        self.pool = lib.pthreadpool_create(max(1, torch.get_num_threads()))
        if not self.pool:
            raise OSError("pthreadpool_create failed")
        self.local = threading.local()  # per-thread workspace: the transform buffers of one call

    def _call(self, strategy, layer, work, size, relu):
        """``layer``: (C_in, C_out, (H, W), (top, right, bottom, left), input, kernel, bias, output pointers)."""
        cin, cout, hw, pad, x, kernel, bias, out = layer
        st = self.f(self.WT8X8, strategy, cin, cout, self.Size(hw[1], hw[0]), self.Padding(*pad), self.Size(3, 3),
                    self.Size(1, 1), x, kernel, bias, out, work, self.ctypes.byref(size), int(relu), None, self.pool,
                    None)
        if st != 0:
            raise RuntimeError(f"NNPACK convolution failed (status {st})")

    def transform(self, weight):
        """The Winograd transform of ``weight`` (C_out, C_in, 3, 3) as a float32 tensor (NNPACK's buffer)."""
        import torch

        cout, cin = int(weight.shape[0]), int(weight.shape[1])
        size = self.ctypes.c_size_t(0)
        args = (cin, cout, (8, 8), (1, 1, 1, 1), None, weight.data_ptr(), None, None)
        self._call(self.PRECOMPUTE, args, None, size, False)  # asks for the size
        buf = torch.empty(-(-size.value // 4))
        self._call(self.PRECOMPUTE, args, buf.data_ptr(), size, False)
        return buf

    def run(self, x, kernel, bias, out, cin, cout, pad, relu):
        """One image: ``x`` (C_in, H, W) contiguous into ``out`` (C_out, H', W') contiguous."""
        import torch

        size = self.ctypes.c_size_t(0)
        args = (cin, cout, tuple(x.shape[1:]), pad, x.data_ptr(), kernel.data_ptr(), bias.data_ptr(), out.data_ptr())
        self._call(self.REUSE, args, None, size, relu)  # asks for the workspace size
        work = getattr(self.local, "work", None)
        if work is None or work.numel() * 4 < size.value:
            work = self.local.work = torch.empty(-(-size.value // 4))
        size.value = work.numel() * 4
        self._call(self.REUSE, args, work.data_ptr(), size, relu)


def _nnpack():
    """The ``_Api`` where NNPACK's inference entry point is exported and agrees with PyTorch's wrapper
    (checked once per process on a small convolution), else None. Its thread pool follows
    ``torch.get_num_threads()`` (a new one where that changed), and a forked child builds its own (the
    parent's pool threads do not exist there)."""
    import os

    import torch

    owner = (os.getpid(), torch.get_num_threads())
    if _STATE.get("api_owner") != owner:
        _STATE.pop("api", None)
        _STATE["api_owner"] = owner
    if "api" not in _STATE:
        _STATE["api"] = None
        if available()[0]:
            try:
                api = _Api()
                _STATE["api"] = api if _agrees(api) else None
            except (OSError, AttributeError, RuntimeError):
                pass
    return _STATE["api"]


def _agrees(api) -> bool:
    import torch

    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(5, 13, 17, generator=g), torch.randn(7, 5, 3, 3, generator=g), torch.randn(7, generator=g)
    out = torch.empty(7, 12, 17)  # 13 rows, one of padding above, none below: 12 output rows
    api.run(x, api.transform(w), b, out, 5, 7, (1, 1, 0, 1), relu=False)
    ref = conv(torch.nn.functional.pad(x[None], (0, 0, 1, 0)), w, b, (0, 1))[0]
    return torch.equal(out, ref)


def __getattr__(name: str):
    """``WinogradConv2d``: an ``nn.Conv2d`` (3 × 3, stride 1) whose forward pass is NNPACK's Winograd
    convolution, defined on first use so that importing this module does not load torch."""
    if name != "WinogradConv2d":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _conv_class()


def _conv_class():
    if "class" not in _STATE:
        from torch import nn

        class WinogradConv2d(nn.Conv2d):
            def kernels(self) -> Winograd3x3:
                """This layer's ``Winograd3x3`` (its kernel transformed once; rebuilt if the weights change)."""
                key = (self.weight.data_ptr(), self.weight._version,
                       None if self.bias is None else (self.bias.data_ptr(), self.bias._version))
                if getattr(self, "_winograd_key", None) != key:
                    self._winograd = Winograd3x3(self.weight, self.bias, self.padding)
                    self._winograd_key = key
                return self._winograd

            def forward(self, x):
                return self.kernels()(x)

            def __getstate__(self):  # copies and pickles leave the transformed kernel behind (rebuilt on use)
                state = self.__dict__.copy()
                state.pop("_winograd", None)
                state.pop("_winograd_key", None)
                return state

        WinogradConv2d.__module__ = __name__
        _STATE["class"] = WinogradConv2d
    return _STATE["class"]


def winograd_convs(module) -> tuple:
    """(a float32 CPU copy of ``module`` with every eligible convolution a ``WinogradConv2d``, how many).
    Raises ``RuntimeError`` where NNPACK is unavailable (``available()`` says why)."""
    ok, why = available()
    if not ok:
        raise RuntimeError(why)
    module = copy.deepcopy(module).cpu().float()
    n = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if eligible(child):
                w = _conv_class()(child.in_channels, child.out_channels, 3, 1, child.padding,
                                  bias=child.bias is not None)
                w.load_state_dict(child.state_dict())
                setattr(parent, name, w.train(child.training))
                n += 1
    return module, n
