"""Example tasks and workflows shipped with onceq (used by `onceq demo`)."""
