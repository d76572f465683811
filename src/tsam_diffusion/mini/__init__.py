"""A tiny synthetic compositional world (coloured shapes on a dark background, 32x32 px) with
template captions mirroring the paper's prompt structures, and an exact rule-based judge.

``world``: palette, shapes, scenes, rendering, captions, train/test sampling with held-out
colour-shape pairs. ``judge``: detection, prompt parsing, present/bound/extra verdicts, confusion.
"""
