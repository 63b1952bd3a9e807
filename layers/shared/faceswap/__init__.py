"""Shared code of the face-swap pipeline: the domain, its ports and the adapters at its edges.

Layout
------
errors      the one exception hierarchy, each class with the stable ``code`` users see
model       jobs, states, requests and provider task snapshots (plain data)
ids         deterministic job ids and per-job webhook secrets
images      input checks with Pillow (decode, bombs, EXIF orientation, downscale)
requests    S3 events and manifests turned into job requests
ports       the interfaces the domain needs (job store, object store, scheduler, provider)
jobs        the domain service: submit, collect, check, callback
fetch       safe streaming download of a provider's result
providers/  one adapter per provider behind the ``Provider`` port
aws         boto3 adapters for the ports (the only module that imports boto3)
config      environment read once at cold start
wiring      builds the pipeline from config for the Lambda handlers (api_wiring: the jobs API's, lighter)
"""
