"""A small shop on FastAPI that sends receipts through onceq (see README.md here)."""
