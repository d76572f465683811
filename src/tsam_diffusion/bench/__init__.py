"""Benchmark harness support for T-SAM.

``tsam_diffusion.bench.suites`` holds the prompt suites (Attend-and-Excite, TIFA v1.0, GenEval,
T2I-CompBench, PartiPrompts, CC-500) shipped with the package, and a loader for a user's own
prompt files. Nothing in this package imports torch at import time.
"""
