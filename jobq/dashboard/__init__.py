"""The web dashboard at ``/ui``: its routes (routes.py) and the recent history of each queue (trends.py).

The page itself is static (jobq/static/ui/); it reads and acts through the HTTP API, logged in
with a jobq token held in an HttpOnly cookie, and follows the queue through server-sent events.
"""
