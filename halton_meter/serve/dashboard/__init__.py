"""The dashboard's static files (index.html, app.js, app.css), served by `serve/api.py` at `/` and `/static/`."""
