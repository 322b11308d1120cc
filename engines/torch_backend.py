"""PyTorch: the GPU fallback where TensorRT is absent (and a CPU check of the same weights).

Loads the card's state dict (`torch_state_dict:` in the card, else `<onnx stem>.pt` beside it)
into BurnUNet (engines/unet.py), in eval mode, BatchNorm folded into the convolutions
(`load_burn_unet`; the peer of `bench --peer` loads it the same way). Precisions: fp32, and fp16
as `.half()` weights with the card's sensitive layers kept in float32 (their ONNX node names, e.g.
"/enc1/enc1.0/Conv", name the module "enc1.0"); int8 is not offered here (use tensorrt or
onnxruntime). Graph inputs and outputs stay float32 either way. fp16 CUDA graphs hold the
weights in channels_last (NHWC); cuDNN times its algorithms before each capture.

Modes on CUDA: "eager", or "graph" (default): one CUDA graph per input shape, captured on the
first batch of that shape (or at `reserve()`), then replayed: the shapes a lane sees are static.
Work runs on the caller's stream (a CuPy or torch stream, or a raw handle); without one, on a
stream the backend owns, never the default stream.

infer(batch): (N, 3, H, W) float32 -> (N, C, H, W) float32 logits. A CuPy or torch CUDA input
returns the same kind, without a host sync (in graph mode a view of the graph's static output,
valid until the next infer() of that shape); a NumPy input returns NumPy.
"""
from __future__ import annotations

import contextlib
import logging

import numpy as np

from holoburn.clinical.errors import BadConfig
from holoburn.engines.backend import Backend, BackendUnavailable, TensorInfo
from holoburn.engines.card import ModelCard, ModelCardError

log = logging.getLogger("holoburn.engines.torch")


def state_dict_path(card: ModelCard):
    name = card.raw.get("torch_state_dict") or (card.onnx_path.stem + ".pt")
    return card.sibling(name)


def module_names_for(onnx_nodes, modules) -> list[str]:
    """Module paths named by ONNX node names of the TorchScript exporter ("/a/a.0/Conv" -> "a.0")."""
    found = []
    for node in onnx_nodes:
        parts = [p for p in str(node).strip("/").split("/") if p]
        candidates = parts[:-1][::-1] + [".".join(parts[:-1])]
        hit = next((c for c in candidates if c in modules), None)
        if hit:
            found.append(hit)
        else:
            log.debug("sensitive layer %s has no matching torch module; left in the model's precision", node)
    return found


@contextlib.contextmanager
def cudnn_timing(torch):
    """cuDNN times its algorithms for each new shape while this is open (the runs before a
    capture): the graph keeps the fastest. Restored after, so eager work elsewhere is unchanged."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


def first_convolution(model):
    from torch import nn

    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def load_burn_unet(card: ModelCard, device: str = "cpu", precision: str = "fp32", *, channels_last: bool = False):
    """The card's BurnUNet with its state dict, ready to infer: eval mode on `device`, no gradients,
    BatchNorm folded into the convolutions (engines.unet.fold_batch_norm: a third fewer kernels,
    same function). precision "fp16": half weights, with the card's sensitive layers kept float32;
    such a layer reads float32, and gives half back unless it is the network's last (the logits
    then stay float32: no cast there and back). The first convolution's dtype is the one the input
    should have. channels_last: weights in NHWC. The backend and the peer (bench --peer) both load
    the model here, so they run the same network."""
    import torch

    from holoburn.engines.unet import WIDTHS, build_model, fold_batch_norm

    if precision not in ("fp16", "fp32"):
        raise BackendUnavailable(f"the torch backend runs fp32 or fp16, not {precision!r}"
                                 + ("; use --backend tensorrt or onnxruntime for int8" if precision == "int8" else ""))
    arch = card.raw.get("architecture") or {}
    if arch.get("name", "BurnUNet") != "BurnUNet":
        raise ModelCardError(f"card {card.path}: the torch backend builds only BurnUNet, not {arch.get('name')!r}")
    weights = state_dict_path(card)
    if not weights.is_file():
        raise BackendUnavailable(f"no PyTorch weights for {card.model_id}: {weights} does not exist "
                                 "(name it in the card as torch_state_dict)")
    model = build_model(card.num_classes, tuple(arch.get("widths") or WIDTHS))
    try:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise ModelCardError(f"{weights} does not fit the BurnUNet the card {card.path} describes: {exc}") from None
    model = fold_batch_norm(model.eval()).to(torch.device(device))
    if precision == "fp16":
        model = model.half()
        modules = dict(model.named_modules())
        last = list(modules)[-1]
        for name in module_names_for(card.sensitive_layers, modules):
            module = modules[name].float()
            module.register_forward_pre_hook(lambda _m, args: tuple(a.float() if torch.is_tensor(a) else a for a in args))
            if name != last:
                module.register_forward_hook(lambda _m, _args, out: out.half())
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.requires_grad_(False)


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, card: ModelCard, precision: str = "fp32", device: str = "cpu", mode: str = "graph", stream=None,
                 memory_format: str | None = None):
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailable(f"PyTorch is not installed ({exc}); pip install 'holoburn[train]'") from None
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable(f"this PyTorch ({torch.__version__}) sees no CUDA device")
        if mode not in ("eager", "graph"):
            raise BadConfig(f"torch backend mode must be eager or graph, got {mode!r}")
        if memory_format not in (None, "channels_first", "channels_last"):
            raise BadConfig(f"torch backend memory_format must be channels_first or channels_last, got {memory_format!r}")
        self._torch = torch
        self.precision, self.device = precision, device
        self.version = str(torch.__version__)
        self.mode = mode if device.startswith("cuda") else "eager"
        self._device = torch.device(device)
        # by default fp16 CUDA graphs in channels_last (NHWC): the layout tensor-core convolutions
        # read; the peer's start-up timing of both layouts on the H200 (bench --peer) found it faster
        self.memory_format = memory_format or (
            "channels_last" if self.mode == "graph" and precision == "fp16" else "channels_first")
        model = load_burn_unet(card, device, precision, channels_last=self.memory_format == "channels_last")
        self._input_dtype = first_convolution(model).weight.dtype
        self.model = model
        self.inputs = (TensorInfo(card.input_name, ("N", 3, "H", "W"), "float32"),)
        self.outputs = (TensorInfo(card.output_name, ("N", card.num_classes, "H", "W"), "float32"),)
        self._graphs: dict[tuple, tuple] = {}  # input shape -> (graph, static input, static output)
        self._chains: list = []  # lanes' whole-frame graphs (capture())
        self._stream = None
        if self._device.type == "cuda":
            self._stream = self._as_stream(stream) if stream is not None else torch.cuda.Stream(self._device)

    def _as_stream(self, stream):
        torch = self._torch
        if isinstance(stream, torch.cuda.Stream):
            return stream
        handle = stream if isinstance(stream, int) else getattr(stream, "ptr", None)
        if not handle:
            raise ValueError("pass the lane's CUDA stream (CuPy/torch stream or handle), not the default stream")
        return torch.cuda.ExternalStream(handle, device=self._device)

    def _forward(self, x):
        out = self.model(x if x.dtype == self._input_dtype else x.to(self._input_dtype))
        # NCHW float32 logits whatever the layout inside (channels_last gives NHWC strides back)
        return out.float().contiguous()

    def _graph_for(self, shape: tuple, stream):
        torch = self._torch
        if shape not in self._graphs:
            static_in = torch.zeros(shape, dtype=torch.float32, device=self._device)
            side = torch.cuda.Stream(self._device)
            side.wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with cudnn_timing(torch):
                with torch.cuda.stream(side), torch.inference_mode():
                    for _ in range(3):  # warm-up: cuDNN times and picks its algorithms before the capture
                        self._forward(static_in)
                stream.wait_stream(side)
                with torch.inference_mode(), torch.cuda.graph(graph, stream=side):
                    static_out = self._forward(static_in)
            stream.wait_stream(side)
            self._graphs[shape] = (graph, static_in, static_out)
        return self._graphs[shape]

    def reserve(self, batch: int, height: int, width: int) -> None:
        """Capture the CUDA graph of one input shape now (start-up), not at the first frame."""
        if self.mode == "graph":
            self._graph_for((batch, 3, height, width), self._stream)

    def capture(self, work, stream_ptr, malloc=None):
        """A lane's whole device work for one frame as one CUDA graph: `work(forward)` enqueues CuPy
        kernels on the current CuPy stream and calls `forward(x)` (the model on a CuPy array, CuPy
        logits back) in between. It runs once uncaptured (kernels compiled, cuDNN's algorithms
        picked), then once into the graph, on a side stream ordered after the lane's stream
        `stream_ptr`. Returns replay(stream_ptr): one launch on that stream. The graph's own
        memory (the model's activations and output) stays reserved while the backend lives.
        Captured with capture_error_mode="thread_local": other lanes' threads go on launching."""
        import cupy

        torch = self._torch
        lane = torch.cuda.ExternalStream(stream_ptr, device=self._device)
        side = torch.cuda.Stream(self._device)
        side_cupy = cupy.cuda.ExternalStream(side.cuda_stream)
        views: dict = {}

        def forward(x):
            key = (x.data.ptr, x.shape, x.dtype.str)
            if key not in views:  # made in the uncaptured run: no DLPack stream hand-shake in the capture
                views[key] = torch.from_dlpack(x)
            out = self._forward(views[key])
            memory = cupy.cuda.UnownedMemory(out.data_ptr(), out.numel() * out.element_size(), out)
            return cupy.ndarray(tuple(out.shape), cupy.float32, cupy.cuda.MemoryPointer(memory, 0))

        allocator = cupy.cuda.using_allocator(malloc) if malloc else contextlib.nullcontext()
        graph = torch.cuda.CUDAGraph()
        side.wait_stream(lane)
        with torch.inference_mode(), allocator, cudnn_timing(torch):
            with torch.cuda.stream(side), side_cupy:
                work(forward)
            with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"), side_cupy:
                work(forward)
        lane.wait_stream(side)
        self._chains.append(graph)

        def replay(ptr):
            with torch.cuda.stream(torch.cuda.ExternalStream(ptr, device=self._device)):
                graph.replay()

        return replay

    def infer(self, batch, stream=None, out=None):
        torch = self._torch
        kind = type(batch).__module__.split(".")[0]
        if self._device.type != "cuda":
            x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)) if kind == "numpy" else batch
            with torch.inference_mode():
                result = self._forward(x)
            return result.numpy() if kind == "numpy" else result
        lane = self._as_stream(stream) if stream is not None else self._stream
        with torch.cuda.stream(lane), torch.inference_mode():
            if kind == "cupy":
                x = torch.from_dlpack(batch)
            elif kind == "numpy":
                x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self._device, non_blocking=False)
            else:
                x = batch
            if self.mode == "graph":
                graph, static_in, static_out = self._graph_for(tuple(x.shape), lane)
                static_in.copy_(x)
                graph.replay()
                result = static_out
            else:
                result = self._forward(x)
            if out is not None:
                target = torch.from_dlpack(out) if type(out).__module__.startswith("cupy") else out
                target.copy_(result)
                result = target
            if kind == "cupy":
                import cupy

                return cupy.from_dlpack(result)
            if kind == "numpy":
                host = result.cpu()  # synchronises this stream only
                return host.numpy()
            return result

    def close(self) -> None:
        self._graphs.clear()
        self._chains.clear()


def open(card: ModelCard, precision: str = "fp32", device: str = "cpu", flavour: str = "torch", *, mode: str = "graph",
         stream=None, memory_format: str | None = None, **_):
    return TorchBackend(card, precision, device, mode=mode, stream=stream, memory_format=memory_format)
