"""The default model: model.onnx, manifest.json, DATA_SOURCES.md."""
