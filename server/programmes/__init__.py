"""Programmes: a commune's recurring daily schedule, from definition to signed plan items.

Pure logic (``recurrence``, ``timeline``, ``conflicts``, ``approval``, ``spec``) is kept
apart from the database (``models``, ``service``), the network (``probe``) and the
clock-driven runner (``planner``), so every rule can be tested with an injected clock.
"""
