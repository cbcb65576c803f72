"""Deployment variants of the code location (Celery, Kubernetes) and the monitored local run launcher."""
