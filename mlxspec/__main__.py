"""`python -m mlxspec`: the same command group as the `mlxspec` script."""
from mlxspec.cli.main import main

if __name__ == "__main__":
    main()
