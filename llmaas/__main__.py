from llmaas.cli import main

main()
