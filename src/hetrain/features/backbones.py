"""Frozen feature extractors behind one interface: model-ready batch in, (N, D) features out.

* ``regnet_x_400mf`` -- our PyTorch RegNet with a torchvision state dict;
* ``torchscript``    -- any TorchScript file (``torch.jit.load``);
* ``onnx``           -- any ONNX model, run with onnxruntime.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from hetrain.features.errors import FeatureError, WeightsError, require
from hetrain.features.regnet import regnet_x_400mf
from hetrain.features.weights import load_into, read_state_dict

BACKBONES = ("regnet_x_400mf", "torchscript", "onnx")


class Backbone:
    """A frozen model: ``backbone(x)`` maps a (N,3,H,W) float32 tensor to (N, D) float32 features."""

    def __init__(self, name: str, run: Callable[[torch.Tensor], np.ndarray], module: torch.nn.Module | None = None):
        self.name = name
        self.module = module  # the torch module, when there is one (not for ONNX)
        self._run = run

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        out = self._run(x)
        return np.asarray(out, dtype=np.float32).reshape(len(x), -1)  # flatten (N, C, 1, 1) heads


def load_backbone(name: str, weights_path: str | Path | None, device: str = "cpu") -> Backbone:
    """Build the named backbone from a local file; nothing is downloaded."""
    if name == "regnet_x_400mf":
        model = load_into(regnet_x_400mf(), read_state_dict(weights_path), source=str(weights_path))
        return torch_backbone(name, model, device)
    if name == "torchscript":
        return torch_backbone(name, _load_torchscript(weights_path, device), device)
    if name == "onnx":
        return onnx_backbone(weights_path)
    raise FeatureError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")


def torch_backbone(name: str, model: torch.nn.Module, device: str = "cpu") -> Backbone:
    """Wrap a torch module (put in eval mode on `device`) as a Backbone."""
    model = model.to(device).eval()

    def run(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return model(x.to(device)).float().cpu().numpy()

    return Backbone(name, run, model)


def _require_file(path: str | Path | None, what: str) -> Path:
    if path is None:
        raise WeightsError(f"--backbone {what} needs the model file: pass it with --weights FILE")
    if not Path(path).is_file():
        raise WeightsError(f"{what} model file not found: {path}")
    return Path(path)


def _load_torchscript(path: str | Path | None, device: str) -> torch.nn.Module:
    path = _require_file(path, "torchscript")
    try:
        with warnings.catch_warnings():  # torch 2.13 flags torch.jit as deprecated; the files still load
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location=device)
    except Exception as exc:  # RuntimeError / ValueError from the TorchScript loader
        raise WeightsError(f"cannot load {path} as a TorchScript model (torch.jit.save output): {exc}") from exc


def onnx_backbone(path: str | Path | None) -> Backbone:
    """Run an ONNX model on CPU with onnxruntime; fixed batch sizes are honoured by chunking."""
    path = _require_file(path, "onnx")
    ort = require("onnxruntime", "--backbone onnx")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise WeightsError(f"cannot load {path} as an ONNX model: {exc}") from exc
    inp = session.get_inputs()[0]
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None

    def run(x: torch.Tensor) -> np.ndarray:
        arr = x.detach().cpu().numpy()
        step = fixed or len(arr)
        outs = []
        for i in range(0, len(arr), step):
            chunk = arr[i : i + step]
            if len(chunk) < step:  # a model exported with a fixed batch: pad the tail, drop its rows
                chunk = np.concatenate([chunk, np.zeros((step - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            try:
                out = session.run(None, {inp.name: chunk})[0]
            except Exception as exc:  # onnxruntime's own error types (wrong shape, rank, type)
                raise FeatureError(f"ONNX model {path} failed on input of shape {chunk.shape}: {exc}") from exc
            outs.append(out.reshape(len(out), -1)[: len(arr) - i])
        return np.concatenate(outs)

    return Backbone("onnx", run)
