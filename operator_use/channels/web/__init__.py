"""The web chat channel: a page on 127.0.0.1 whose replies stream in over a websocket."""
