"""The default model: manifest.json and trained.safetensors (heads on a pinned pretrained
encoder), DATA_SOURCES.md."""
