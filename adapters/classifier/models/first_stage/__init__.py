"""The screening cascade's first stage (``sg-first-stage``): weights.safetensors (hashed word
n-gram weights, float16) and manifest.json (threshold, recipe, measured figures). Rebuilt by
``safeguards classifier train-first-stage`` from the default model and the corpus packages."""
