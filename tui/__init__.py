"""mlxspec chat: the Textual terminal app (installed as mlxspec.tui).

Modules: app (the main screen), contract (what the chat needs from a model backend) and
backend (the real one, over mlxspec's public API), engine_thread (the one thread that owns
the backend), stats (status text), settings, store (saved conversations); screens/ (options,
help, saved conversations), widgets/ (the chat log); chat.tcss (all the styles).
"""
