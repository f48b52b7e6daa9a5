"""Inference, kept apart from the descriptors that use it.

- ``model``: ``Model``, what an engine needs of a network (built in PyTorch, or shipped as ONNX),
  the ``CalibrationSet`` it may calibrate on, and the failures that send a descriptor to its fallback.
- ``engines``: ``Engine`` and its kinds: eager PyTorch, ONNX Runtime fp32 (the exact path; a shipped
  graph as it is), ONNX Runtime int8; ``openvino_engines``: OpenVINO fp32, bf16 and NNCF int8.
- ``export`` and ``quantize``: the ONNX export and the int8 model, kept in the model folder they are given.
- ``precision``: the one policy that picks an engine per model, engine, precision and CPU kind (``cpu``), from
  the measured paths in ``choices.toml``.
- ``onnx``: ``OnnxRunner``, one ONNX Runtime session; ``pipeline``: preparing batches ahead of the model.
"""
