"""Open-Det: open-ended detection that generates object names (ICML 2025)."""
