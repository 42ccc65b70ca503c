"""Lambda entry of the docs group: its routes (routes.py) are imported on the first invoke, see isthmus.entry."""

from isthmus.entry import lazy_entry

app = lazy_entry(__name__)
handler = app.handler
