from hexdbt.cli import main

main()
