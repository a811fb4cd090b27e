"""The web console: pages and their assets, served by the app itself (no CDN, no other host)."""
