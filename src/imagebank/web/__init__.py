"""HTTP application: app factory, HTML pages and JSON API routes."""
