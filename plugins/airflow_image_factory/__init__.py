"""Builds, tests and publishes Apache Airflow's own container images from Airflow DAGs.

Four layers, each importing only those below it (``make lint`` checks this): :mod:`.tasks` (Airflow) over
:mod:`.services` (workflows) over :mod:`.clients` (I/O) over :mod:`.policy` (pure decisions), with the domain
errors in :mod:`.exceptions`. The README's "Architecture" section draws them.
"""
