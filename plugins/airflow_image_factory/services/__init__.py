"""Workflows over the clients, without Airflow: a verified copy, applying a promotion plan, publishing a
release, a retag, the smoke runs of the chart. Each is a function or a small class taking its clients, so
it is unit-tested with fakes and run for real on the stack.
"""
