"""The operators' web console (``safeguards console``): sign-in with operator keys, account
search, timelines with a plot, explanations, linked accounts, the review queue and the region's
health. See ``app`` for what it guarantees."""
