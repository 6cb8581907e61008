"""Blob storage in Keepsake's repository layout, and getting what a run records safely into it:
the layout (the only owner of key strings), heartbeats, the journal of staged work, the
background writer, and `publish` (storage JSON, then git, then the note)."""
