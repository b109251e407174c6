"""Residents hear it again: a commune's aired bulletins, public, for seven days (issue 15).

``replay`` finds what may be shown (and nothing else), ``feed`` writes the podcast RSS.
"""
