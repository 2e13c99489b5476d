from cxltierd.cli import main

main()
