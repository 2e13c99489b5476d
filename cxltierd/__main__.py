"""`python -m cxltierd`: the command line."""

from cxltierd.cli import main

main()
