from maml.cli import main

main()
