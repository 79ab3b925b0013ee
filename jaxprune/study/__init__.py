"""The where-to-prune study: one command from a model and a task to a report with sound controls.

`stats` holds the paired comparisons (bootstrap over items and random draws, Holm across a table).
"""
