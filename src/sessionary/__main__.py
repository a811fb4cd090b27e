from sessionary.cli import main

main()
