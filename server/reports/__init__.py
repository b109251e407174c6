"""Reports: what stations were asked to play (``planned``) against what they played (``asrun``).

Nothing is imported here, so the pure as-run logic loads without the database.
"""
