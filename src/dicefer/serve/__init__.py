"""`dicefer serve`: the HTTP server, its page and its API documentation (app.py)."""
