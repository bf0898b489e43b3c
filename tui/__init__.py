"""mlxspec chat: the Textual terminal app (installed as mlxspec.tui)."""
