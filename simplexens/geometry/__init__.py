"""Pure tensor geometry of loss-surface ensembles: simplexes, complexes, curves, planes."""
