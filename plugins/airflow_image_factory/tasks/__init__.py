"""The Airflow-facing layer: hooks (Connections → clients), operators (thin steps over one service each),
sensors, triggers, asset and link definitions, the plugin, and the task groups the DAG files assemble.
The only layer that imports Airflow.
"""
