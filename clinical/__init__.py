"""Clinical logic of holoburn as plain functions on arrays: depth classes, burn size, triage.

Nothing here imports Holoscan, a GPU library or anything above this layer.
"""
