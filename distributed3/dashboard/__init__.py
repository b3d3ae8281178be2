"""The center's web dashboard, its Prometheus metrics and the health endpoints.

::

    app.py        the tornado application: pages, server-sent events, key search,
                  /metrics, /health; the token derived from the cluster's secret
    snapshot.py   what the pages show, from the center's state and telemetry
    metrics.py    the Prometheus collector (needs prometheus_client)
    health.py     /health and /ready, alone, for a worker (dworker --http-port)
    static/       the pages: HTML, JavaScript and CSS, nothing fetched from elsewhere
"""
