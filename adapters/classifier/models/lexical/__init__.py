"""The lexical model (TF-IDF + logistic regression, ``sg-default-tfidf``): model.onnx,
manifest.json, DATA_SOURCES.md. No longer the default; kept as a shadow and a fast first stage."""
