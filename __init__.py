"""safeguards: actor-based, event-sourced enforcement for a model served through cloud providers."""

__version__ = "0.1.0"
