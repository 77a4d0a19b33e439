"""Run the CLI from a checkout: `python cli.py train -c configs/digits-20.yaml`."""
from ssgan.cli import main

if __name__ == "__main__":
    main()
