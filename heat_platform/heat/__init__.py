"""The physics domain of the inverse heat problem u_t - div(a grad u) = f, with no platform in it.

Problem specs (``spec``) with safe formulas (``formula``), the readings (``observations``) and
their scaling (``scaling``), the finite-volume forward solver (``solver``), the classical adjoint
inversion (``inversion``), synthetic experiments (``synthetic``, scenario files in ``data/``),
the PINNacle HeatInv benchmark (``heatinv``) and error measures (``metrics``). NumPy and SciPy
only: neither Dagster nor torch is imported here, so the PINN, the data pipeline, the gate and
the benchmarks all build on it.
"""
