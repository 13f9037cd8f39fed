"""onceq's own tools, run against a user's deployment: diagnose and bench."""
