"""A small offline quality check (`mlxspec eval`): seeded arithmetic word problems with
known answers (arith.py) and small Python functions with unit tests run in a subprocess
(code.py), run by runner.py for each verification setting side by side."""
