"""Audits: which data, code and decisions produced a served number (:mod:`.lineage`), and the
champion's history as a page for the Dagster UI (:mod:`.trail`). Dagster-free; it sits on the
serving, models and data libraries and reads what they recorded, never changing it.
"""
