"""Benchmarks and the simulated station swarms they drive (``loaxa bench …``).

Kept apart from the runtime modules of ``loaxa`` (the CLI, the broker, the stack): none of
this runs in a province's server or on a station; it measures them.
"""
