"""Run the operator-use CLI from a checkout: `python main.py run`."""

from operator_use.cli.main import main

if __name__ == "__main__":
    main()
