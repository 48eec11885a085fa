"""The shipped fault scenarios (``*.toml``, see ``topologies.scenario``).

A package only so that the TOML files install with scalelab (package data) and
``scalelab run STAGE --load P --scenario NAME`` finds them by name.
"""
