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
    source = net.source_at(out_path)
    if source:
        raise ValueError(f"{out_path} is {source}, a file the network is compiled from: writing the ONNX file there "
                         "would replace the spec; give it another path")
    check_limits(net)  # the export runs the model once: refuse what would exhaust memory before allocating
    given = model is not None
    model = model if given else build_model(net)
    _check_size(model, net.name)
    modes = [(m, m.training) for m in model.modules()]  # a caller's model is left as it was given, module by module
    # a model built with another input (build_model(spec, in_channels=1, input_size=(28, 28))) says which
    device = next(model.parameters(), torch.zeros(0)).device  # a trained model may be on a GPU
    x = torch.zeros(batch, *getattr(model, "resdsl_input_shape", net.input_shape), device=device)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            buffer = io.BytesIO()
            torch.onnx.export(model.eval(), (x,), buffer, dynamo=False, opset_version=opset, input_names=["input"],
                              output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    except RuntimeError as exc:
        if not given:
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise RuntimeError(f"the model given does not take a {'x'.join(map(str, x.shape[1:]))} input ({first}): "
                           "build it with resdsl.build_model, which records its input, or pass the network compiled "
                           "with the model's in_channels and input_size") from None
    finally:
        for m, training in modes:
            m.training = training
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    write_output(out_path, buffer.getvalue())
    return {"path": out_path, "opset": opset, "nodes": len(proto.graph.node),
            "initializers": len(proto.graph.initializer)}


# protobuf, in which an ONNX file is written, holds at most 2 GiB; the graph itself needs a little of it
ONNX_MAX_BYTES = 2**31 - 2**24


def _check_size(model, name: str) -> None:
    """Refuse, before exporting, a model whose weights do not fit in one ONNX file."""
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    if size > ONNX_MAX_BYTES:
        raise RuntimeError(f"{name}'s weights take {size / 2**30:.2f} GiB, and an ONNX file holds at most 2 GiB "
                           "(protobuf's limit): it is not exported")
