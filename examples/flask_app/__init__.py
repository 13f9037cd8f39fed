"""A Flask app that enqueues thumbnails through onceq (see README.md)."""
