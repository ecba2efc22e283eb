"""An exported ``.onnx`` file run by onnxruntime, called like a backbone: float (B, 1, 28, 28) in, logits (B, 10) out."""

from __future__ import annotations

from pathlib import Path

import torch

from fashion_conv.utils.errors import FashionConvError


class OnnxBackbone:
    """An ONNX model on onnxruntime's CPU provider; ``threads`` caps its intra-op threads (None: onnxruntime's choice)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime  # the [serve] extra; imported here so that torch-only users never need it

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime reports a missing or broken file with its own exception types
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise FashionConvError(f"{path}: not an ONNX model onnxruntime can run ({detail})") from None
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.input_name: x.contiguous().numpy()})[0])

    def eval(self) -> OnnxBackbone:
        return self  # always inference: no dropout or batch-norm state to switch
