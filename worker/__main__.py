"""``python -m worker`` and the ``flextell-worker`` script.

The garbage collector is tuned before the CLI's modules load (worker.gctune):
loading them otherwise runs some 130 collections.
"""

from worker.gctune import tune


def main() -> None:
    """Console-script entry point."""
    tune()
    from worker.cli import main as cli_main  # after tune(), on purpose

    cli_main()


if __name__ == "__main__":
    main()
