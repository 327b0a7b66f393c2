"""The web UI: server-rendered pages (Jinja2), sessions with CSRF protection, security headers."""
