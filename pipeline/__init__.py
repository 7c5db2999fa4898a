"""The library behind the DVC stages: each module has one job (see the README's Layout)."""
