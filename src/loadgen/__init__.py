"""The load generator: the users behind every figure scalelab reports."""
