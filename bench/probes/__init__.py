"""Probes: what the harness verifies or measures on a live target beside the workload.

One module per probe family; each registers its probes in the one table of
:mod:`bench.probes.registry`, which also decides the verdict of a probe the adapter cannot
serve (declared ``unsupported``, or missing the protocol the probe needs).
"""
