"""`python -m ssgan ...`: the same command line as `ssgan ...`."""
from ssgan.cli import main

main()
