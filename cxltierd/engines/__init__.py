"""Engines: how heat is sampled (trackers) and how memory is moved (migrators).

Each family is a small Protocol (base.py) with an explicit registry; the simulated memory system implements
both, and so do the real-kernel engines (DAMON, move_pages, DAMOS, NUMA-balancing tiering).
"""
