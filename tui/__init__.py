"""mlxspec chat: the Textual terminal app (installed as mlxspec.tui).

Modules: app (the main screen), engine_thread (the one thread that owns the models),
messages / stats (widgets and status text), options_screen, help_screen,
conversations_screen, store (saved conversations), settings.
"""
