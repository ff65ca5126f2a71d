"""Pure decisions: names, references, requests, the cache, the promotion plan, housekeeping, the nightly's
choices, constraints, release tags and the image contract. Data in, decisions out: no Airflow, no HTTP,
no Docker, no files, no processes (``make lint`` holds this with import-linter).
"""
