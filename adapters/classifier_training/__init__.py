"""Training and evaluation of the default classifier (needs the ``train`` extra to train)."""
