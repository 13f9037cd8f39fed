"""Django and onceq on the same PostgreSQL database (see README.md)."""
