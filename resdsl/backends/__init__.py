"""Backends: from a checked IR to runnable or viewable artefacts (Python source, torch modules, ONNX)."""
