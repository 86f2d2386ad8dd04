"""Physics and model code for the inverse heat problem u_t - div(a grad u) = f.

No Dagster import anywhere below this package: it is a small scientific library that can be
used and tested on its own.
"""
