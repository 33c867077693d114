"""`maml serve`: one long-lived service in front of the runtime (DESIGN §7b).

    records    durable run records: accepted requests, how each run ended, its event log
    hub        EventHub: a runtime observer that keeps each run's live view and feeds SSE
    runner     Runner: the FIFO queue and the threads (lanes) that run documents (the one
               seam to the runtime: `execute()`); Acceptance and Gate: no attempt before
               a run's request is durable
    lanes      one warm maml.Session per lane; lane 0 alone has GPU workers
    service    Service: every operation the HTTP API, the dashboard and MCP offer, once
    auth       the bearer token and the principal it stands for
    app        create_app(): FastAPI (API under /api/v1, dashboard at /, MCP at /mcp)
    routes     the /api/v1 routes; mcp_tools: the MCP tools; client: the HTTP client of
               `maml submit` and `maml runs --server`
    static/    the dashboard: HTML, CSS, JS and vendored libraries (no CDN)

Nothing here is imported by `import maml`; FastAPI, uvicorn and mcp load only when a
server, a client or `maml mcp` starts.
"""
