"""scalelab's servers: one package per box of the scaling journey, plus ``common``."""
