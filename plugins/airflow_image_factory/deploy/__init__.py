"""Smoke deploys of the helm chart: the Kubernetes test image, chart rendering and validation, kind + helm
(hook → manager → operator, as the cncf-kubernetes provider layers them) and a Docker-backed run of the
rendered chart for machines without kind.
"""
