"""``python -m sknet``: the command line."""

from sknet.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
