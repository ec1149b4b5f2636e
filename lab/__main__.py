"""``python -m lab <overrides>``: see ``python -m lab --help``."""

from lab.cli import main

if __name__ == "__main__":
    main()
