"""The pure domain: events, account state, policy, decide/evolve, codec, errors and ports.

Nothing here performs I/O, reads the clock or draws randomness: time, ids and configuration come
in as arguments, which is what makes replay, backtests and root-cause analyses exact.
"""
