"""``python -m lit_transfer`` runs the ``lit-transfer`` command line."""

from lit_transfer.cli import main

if __name__ == "__main__":
    main()
