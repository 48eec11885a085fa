"""The built-in load profiles (``*.toml``); a package so that they ship as package data.

``scalelab load URL --profile NAME`` finds ``NAME.toml`` here; see ``loadgen.profile``
for the format.
"""
