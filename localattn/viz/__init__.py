"""Looking at the models: attention maps captured from the real forward, effective receptive fields,
training curves and prediction grids (PNG, matplotlib's Agg backend).

`capture` and `erf` need only torch; `draw`, `curves` and `grid` import matplotlib when called.
"""
