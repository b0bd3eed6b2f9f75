"""``python -m bncli`` is ``bn``."""

from bncli.cli.main import main

if __name__ == "__main__":
    main()
