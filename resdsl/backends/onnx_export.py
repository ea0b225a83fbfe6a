"""Checked IR -> ONNX file (through the torch backend), validated with onnx.checker."""
from __future__ import annotations

import warnings


def export_onnx(net, out_path: str, *, model=None, batch: int = 1, opset: int = 17) -> dict:
    """Write ``net`` (or ``model``, a module built from it, e.g. trained) as ONNX with a dynamic batch axis,
    in eval mode; returns facts about the file for the CLI to print. The model is exported and checked in memory,
    then written like every other output (atomically, never replacing a device, pipe or link)."""
    import io

    import torch

    from ..train.fileio import write_output

    from .torch_module import build_model, check_limits

    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("ONNX export needs the 'onnx' package: pip install onnx") from exc
    check_limits(net)  # the export runs the model once: refuse what would exhaust memory before allocating
    model = model if model is not None else build_model(net)
    modes = [(m, m.training) for m in model.modules()]  # a caller's model is left as it was given, module by module
    x = torch.zeros(batch, *net.input_shape)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            buffer = io.BytesIO()
            torch.onnx.export(model.eval(), (x,), buffer, dynamo=False, opset_version=opset, input_names=["input"],
                              output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    finally:
        for m, training in modes:
            m.training = training
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    write_output(out_path, buffer.getvalue())
    return {"path": out_path, "opset": opset, "nodes": len(proto.graph.node),
            "initializers": len(proto.graph.initializer)}
