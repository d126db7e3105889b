"""The staff dashboard: overview, threads, runs. Views parse the request, call the store,
and render; one URL serves a full page and, for htmx, its live fragment."""
